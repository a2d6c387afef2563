//! `GET /metrics` on the daemon's HTTP listener, in the Prometheus text
//! format: deploy state per change, the latest KPI window, breaker trips,
//! rollbacks, operator overrides, and the values of managed knobs. Read
//! from the store on each scrape (no counters in memory to lose on a
//! restart). It needs an observe token unless `api.metrics_public` is set.

use std::fmt::Write as _;

use crate::config::Config;
use crate::deploy::record::{self, DeployState};
use crate::error::Error;
use crate::store::Store;

/// Label values are quoted; backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.chars()
        .take(200)
        .flat_map(|c| match c {
            '\\' => vec!['\\', '\\'],
            '"' => vec!['\\', '"'],
            '\n' => vec!['\\', 'n'],
            c => vec![c],
        })
        .collect()
}

fn help(s: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(s, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

fn count(store: &Store, sql: &str) -> Result<i64, Error> {
    store
        .conn()
        .query_row(sql, [], |r| r.get(0))
        .map_err(|e| Error::Internal(anyhow::anyhow!("metrics: {e}")))
}

/// The exposition text.
pub fn render(cfg: &Config) -> Result<String, Error> {
    let store = Store::open_in(&cfg.state_dir())?;
    let mut s = String::new();

    help(
        &mut s,
        "schedcp_deployments",
        "gauge",
        "Deployments (changes) by state.",
    );
    for st in [
        DeployState::Canary,
        DeployState::Active,
        DeployState::RolledBack,
        DeployState::Superseded,
    ] {
        let n = count(
            &store,
            &format!(
                "SELECT COUNT(*) FROM deployments WHERE state = '{}'",
                st.as_str()
            ),
        )?;
        let _ = writeln!(s, "schedcp_deployments{{state=\"{}\"}} {n}", st.as_str());
    }
    help(
        &mut s,
        "schedcp_deployment_info",
        "gauge",
        "Changes in force (1), with their state and what they change.",
    );
    let chain = record::in_force(&store)?;
    for d in &chain {
        let _ = writeln!(
            s,
            "schedcp_deployment_info{{id=\"{}\",state=\"{}\",change=\"{}\"}} 1",
            d.id,
            d.state.as_str(),
            label(&d.label())
        );
    }
    help(
        &mut s,
        "schedcp_rollbacks_total",
        "counter",
        "Rollbacks, manual or by the breaker.",
    );
    let _ = writeln!(
        s,
        "schedcp_rollbacks_total {}",
        count(
            &store,
            "SELECT COUNT(*) FROM deploy_events WHERE event = 'rolled_back'"
        )?
    );
    help(
        &mut s,
        "schedcp_breaker_trips_total",
        "counter",
        "Rollbacks the circuit breaker decided (not manual).",
    );
    let _ = writeln!(
        s,
        "schedcp_breaker_trips_total {}",
        count(
            &store,
            "SELECT COUNT(*) FROM deploy_events WHERE event = 'rolled_back' AND detail NOT LIKE 'manual rollback%'"
        )?
    );
    help(
        &mut s,
        "schedcp_operator_overrides_total",
        "counter",
        "Managed knobs released because an operator changed them.",
    );
    let _ = writeln!(
        s,
        "schedcp_operator_overrides_total {}",
        count(
            &store,
            "SELECT COUNT(*) FROM deploy_events WHERE event = 'operator_override'"
        )?
    );

    help(
        &mut s,
        "schedcp_kpi",
        "gauge",
        "The latest KPI window of the current change (canary or passive), and its baseline.",
    );
    if let Some(d) = chain.first() {
        let mut put = |window: &str, k: &crate::deploy::kpi::Kpis| {
            let vals = [
                ("runq_p50_us", k.runq_p50_us),
                ("runq_p99_us", k.runq_p99_us),
                ("psi_cpu_some_pct", k.psi_cpu_some_pct),
                ("nr_rejected", k.nr_rejected.map(|v| v as f64)),
                ("workload", k.workload.as_ref().map(|w| w.value)),
            ];
            for (name, v) in vals {
                if let Some(v) = v {
                    let _ = writeln!(
                        s,
                        "schedcp_kpi{{id=\"{}\",window=\"{window}\",kpi=\"{name}\"}} {v}",
                        d.id
                    );
                }
            }
        };
        if let Some(b) = &d.baseline {
            put("baseline", b);
        }
        if let Some(w) = d.windows.last() {
            put("latest", w);
        }
    }

    help(&mut s, "schedcp_knob_managed", "gauge", "Knobs schedcp manages now: the value it wrote (numeric knobs) or 1 with the value as a label.");
    help(
        &mut s,
        "schedcp_knob_released",
        "gauge",
        "Knobs released to an operator (1), with the value schedcp had written.",
    );
    let mut claimed = std::collections::BTreeSet::new();
    for d in &chain {
        let Some(k) = &d.knobs else { continue };
        for p in k.plan.managed() {
            let (name, v) = (p.knob, p.value);
            if !claimed.insert(name.clone()) {
                continue;
            }
            if let Some(r) = k.released.iter().find(|r| r.knob == name) {
                let _ = writeln!(
                    s,
                    "schedcp_knob_released{{knob=\"{}\",id=\"{}\",written=\"{}\"}} 1",
                    label(&name),
                    d.id,
                    label(&r.expected)
                );
                continue;
            }
            match v.parse::<f64>() {
                Ok(n) => {
                    let _ = writeln!(
                        s,
                        "schedcp_knob_managed{{knob=\"{}\",id=\"{}\"}} {n}",
                        label(&name),
                        d.id
                    );
                }
                Err(_) => {
                    let _ = writeln!(
                        s,
                        "schedcp_knob_managed{{knob=\"{}\",id=\"{}\",value=\"{}\"}} 1",
                        label(&name),
                        d.id,
                        label(&v)
                    );
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
