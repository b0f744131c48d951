//! Phase timings, printed to stderr when `SETTLEMENT_TIMING` is set.

/// Prints how long a phase took when `SETTLEMENT_TIMING` is set.
pub struct Phase(Option<(std::time::Instant, &'static str)>);

impl Phase {
    pub fn start(name: &'static str) -> Phase {
        Phase(std::env::var_os("SETTLEMENT_TIMING").map(|_| (std::time::Instant::now(), name)))
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some((t, n)) = self.0 {
            let rss = std::fs::read_to_string("/proc/self/status")
                .ok()
                .map(|s| {
                    let v = |k: &str| {
                        s.lines()
                            .find(|l| l.starts_with(k))
                            .map(|l| l[k.len()..].trim().to_string())
                            .unwrap_or_default()
                    };
                    format!("{}, peak {}", v("VmRSS:"), v("VmHWM:"))
                })
                .unwrap_or_default();
            eprintln!(
                "timing: {n}: {:.3} s (rss {rss})",
                t.elapsed().as_secs_f64()
            );
        }
    }
}
