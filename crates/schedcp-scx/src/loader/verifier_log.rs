//! Capturing libbpf's output, which carries the kernel verifier's log when a
//! program is rejected.

use std::sync::Mutex;

use libbpf_rs::PrintLevel;

static CAPTURED: Mutex<String> = Mutex::new(String::new());

fn capture(_level: PrintLevel, msg: String) {
    if let Ok(mut buf) = CAPTURED.lock() {
        // Bound memory: a pathological program can produce megabytes of log.
        if buf.len() < 4 << 20 {
            buf.push_str(&msg);
        }
    }
}

/// Route libbpf's messages (including verifier logs) into our buffer.
pub fn install() {
    libbpf_rs::set_print(Some((PrintLevel::Info, capture)));
}

pub fn take() -> String {
    CAPTURED
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

/// The part of libbpf's output that matters to whoever wrote the program:
/// the program's verifier log with its tail (where the verdict is) kept and a
/// long middle elided.
pub fn trim(full: &str, max_lines: usize) -> String {
    let body = match (
        full.find("-- BEGIN PROG LOAD LOG --"),
        full.find("-- END PROG LOAD LOG --"),
    ) {
        (Some(b), Some(e)) if b < e => {
            let start = full[b..].find('\n').map_or(b, |n| b + n + 1);
            let header = full[..b]
                .lines()
                .rev()
                .find(|l| l.contains("prog '"))
                .unwrap_or("");
            let tail = full[e..]
                .lines()
                .skip(1)
                .filter(|l| l.contains("failed") || l.contains("prog '"))
                .collect::<Vec<_>>();
            let mut s = String::new();
            if !header.is_empty() {
                s.push_str(header.trim_end());
                s.push('\n');
            }
            s.push_str(&full[start..e]);
            for l in tail {
                s.push_str(l.trim_end());
                s.push('\n');
            }
            s
        }
        _ => full.to_string(),
    };
    let lines: Vec<&str> = body.lines().collect();
    if lines.len() <= max_lines {
        return body;
    }
    let head = max_lines / 4;
    let tail = max_lines - head;
    let mut s = lines[..head].join("\n");
    s.push_str(&format!(
        "\n... {} lines elided ...\n",
        lines.len() - max_lines
    ));
    s.push_str(&lines[lines.len() - tail..].join("\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::trim;

    #[test]
    fn keeps_program_log_and_verdict() {
        let full = "libbpf: prog 'bad': BPF program load failed: Permission denied\n\
                    libbpf: prog 'bad': -- BEGIN PROG LOAD LOG --\n\
                    0: R1=ctx() R10=fp0\n1: (79) r0 = *(u64 *)(r1 +0)\nR0 invalid mem access 'map_value_or_null'\n\
                    -- END PROG LOAD LOG --\nlibbpf: prog 'bad': failed to load: -13\n";
        let t = trim(full, 50);
        assert!(t.contains("invalid mem access"));
        assert!(t.contains("failed to load"));
        assert!(!t.contains("BEGIN PROG LOAD LOG"));
    }

    #[test]
    fn elides_long_middle() {
        let full: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let t = trim(&full, 40);
        assert!(t.contains("line 0") && t.contains("line 999") && t.contains("elided"));
        assert!(t.lines().count() <= 41);
    }
}
