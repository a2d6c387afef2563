//! Concurrency caps for tools that hold machine resources while they run
//! (root profilers, eBPF probes): a global cap per kind and one at a time
//! per token, answered `busy` with a retry time — never queued, so a
//! flood cannot exhaust the blocking pool that authentication also uses.

use std::collections::HashMap;
use std::sync::Mutex;

use super::error::{ApiError, Code};

#[derive(Debug, Default)]
pub struct Slots {
    /// kind → token ids holding a slot (one entry per slot).
    held: Mutex<HashMap<&'static str, Vec<String>>>,
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
    kind: &'static str,
    token: String,
}

impl Slots {
    /// Take a slot of `kind` for `token`, if fewer than `max` are held and
    /// the token holds none; `retry_s` is the caller's hint.
    pub fn take(
        &self,
        kind: &'static str,
        token: &str,
        max: usize,
        retry_s: f64,
    ) -> Result<Slot<'_>, ApiError> {
        let mut held = self.held.lock().expect("slots lock");
        let list = held.entry(kind).or_default();
        let refuse = |message: String| {
            let mut e = ApiError::new(Code::Busy, message);
            e.retry_after_s = Some(retry_s.max(1.0));
            Err(e)
        };
        if list.iter().any(|t| t == token) {
            return refuse(format!(
                "token {token} already runs a {kind}; one at a time per token"
            ));
        }
        if list.len() >= max {
            return refuse(format!(
                "{} {kind} runs are in progress (the limit is {max}); retry when one ends",
                list.len()
            ));
        }
        list.push(token.to_string());
        Ok(Slot {
            slots: self,
            kind,
            token: token.to_string(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("slots lock");
        if let Some(list) = held.get_mut(self.kind) {
            if let Some(i) = list.iter().position(|t| *t == self.token) {
                list.remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_token_and_a_global_cap() {
        let s = Slots::default();
        let a = s.take("profile", "a", 2, 5.0).unwrap();
        assert!(s
            .take("profile", "a", 2, 5.0)
            .unwrap_err()
            .message
            .contains("one at a time"));
        let _b = s.take("profile", "b", 2, 5.0).unwrap();
        let e = s.take("profile", "c", 2, 5.0).unwrap_err();
        assert_eq!(e.code, Code::Busy);
        assert_eq!(e.retry_after_s, Some(5.0));
        assert!(
            s.take("probe", "c", 2, 5.0).is_ok(),
            "kinds are counted apart"
        );
        drop(a);
        assert!(s.take("profile", "c", 2, 5.0).is_ok());
    }
}
