//! Progress of a long run, on stderr: counts and rate while `publish` or `subscribe` runs.
//!
//! When stderr is a terminal a one-line bar is redrawn four times a second (with a percentage
//! when the input's size is known, `publish --file`) and erased at the end. Otherwise (a log
//! file, a pipe, CI) a `tracing` line at `info` with target `progress` comes every
//! `--progress-interval` seconds (5 by default), so a long run's log shows it is alive and how
//! fast it goes; a run shorter than the interval prints nothing. `--progress-interval 0` turns
//! both off. Neither touches stdout, which carries the command's results.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One reading of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// What the rate is measured on: lines published, or messages received.
    pub done: u64,
    /// Writes acknowledged as persisted (`publish`).
    pub persisted: Option<u64>,
    /// Writes not acknowledged yet (`publish`).
    pub unacknowledged: Option<u64>,
    /// Writes reported failed (`publish`).
    pub failed: Option<u64>,
    /// Share of the input read, 0..=1, when its size is known.
    pub fraction: Option<f64>,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Redraw a bar on the terminal.
    Bar,
    /// A log line at this interval.
    Lines(Duration),
    /// Nothing.
    Off,
}

impl Mode {
    /// The mode for this process: `Off` for a zero interval, a bar when stderr is a terminal.
    pub fn detect(interval: Duration) -> Mode {
        if interval.is_zero() {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines(interval)
        }
    }
}

/// A running reporter; [`Reporter::stop`] ends it (and erases the bar).
pub struct Reporter {
    handle: tokio::task::JoinHandle<()>,
    bar: bool,
}

impl Reporter {
    /// Starts reporting what `sample` reads (`None`: skip this round). `what` names the
    /// command in the log line (`publish`, `subscribe`) and `unit` the rate's unit.
    pub fn start<F, Fut>(mode: Mode, what: &'static str, mut sample: F) -> Option<Reporter>
    where
        F: FnMut() -> Fut + 'static,
        Fut: Future<Output = Option<Sample>> + 'static,
    {
        let every = match mode {
            Mode::Off => return None,
            Mode::Bar => Duration::from_millis(250),
            Mode::Lines(d) => d,
        };
        let bar = mode == Mode::Bar;
        let handle = actix::spawn(async move {
            let start = Instant::now();
            let mut rate = Rate::new(start);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(s) = sample().await else { continue };
                let now = Instant::now();
                let per_sec = rate.update(now, s.done);
                let elapsed = now - start;
                if bar {
                    let line = bar_line(&s, per_sec, elapsed, what);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r{line}\x1b[K");
                    let _ = err.flush();
                } else {
                    tracing::info!(
                        target: "progress",
                        command = what,
                        done = s.done,
                        persisted = s.persisted,
                        unacknowledged = s.unacknowledged,
                        failed = s.failed,
                        per_second = per_sec.round() as u64,
                        elapsed_s = elapsed.as_secs(),
                        "{}",
                        summary(&s, per_sec, what)
                    );
                }
            }
        });
        Some(Reporter { handle, bar })
    }

    /// Stops reporting and erases the bar.
    pub fn stop(self) {
        self.handle.abort();
        if self.bar {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// The rate over the last interval (messages per second).
struct Rate {
    at: Instant,
    done: u64,
}

impl Rate {
    fn new(at: Instant) -> Rate {
        Rate { at, done: 0 }
    }

    fn update(&mut self, now: Instant, done: u64) -> f64 {
        let secs = (now - self.at).as_secs_f64();
        let rate = if secs > 0.0 {
            done.saturating_sub(self.done) as f64 / secs
        } else {
            0.0
        };
        self.at = now;
        self.done = done;
        rate
    }
}

/// `published 1,234 persisted 1,200 unacked 34 failed 0, 5,678/s`.
fn summary(s: &Sample, per_sec: f64, what: &str) -> String {
    let verb = if what == "publish" {
        "published"
    } else {
        "received"
    };
    let mut text = format!("{verb} {}", grouped(s.done));
    for (name, v) in [
        ("persisted", s.persisted),
        ("unacked", s.unacknowledged),
        ("failed", s.failed),
    ] {
        if let Some(v) = v {
            text.push_str(&format!(" {name} {}", grouped(v)));
        }
    }
    text.push_str(&format!(", {}/s", grouped(per_sec.round() as u64)));
    text
}

fn bar_line(s: &Sample, per_sec: f64, elapsed: Duration, what: &str) -> String {
    const WIDTH: usize = 20;
    let bar = match s.fraction {
        Some(f) => {
            let f = f.clamp(0.0, 1.0);
            let full = (f * WIDTH as f64).round() as usize;
            format!(
                "[{}{}] {:>3}% ",
                "#".repeat(full),
                "-".repeat(WIDTH - full),
                (f * 100.0).round() as u64
            )
        }
        None => String::new(),
    };
    let t = elapsed.as_secs();
    format!(
        "{bar}{}  {}:{:02}",
        summary(s, per_sec, what),
        t / 60,
        t % 60
    )
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }

    #[test]
    fn the_rate_is_over_the_last_interval() {
        let t0 = Instant::now();
        let mut r = Rate::new(t0);
        assert_eq!(r.update(t0 + Duration::from_secs(2), 1000), 500.0);
        assert_eq!(r.update(t0 + Duration::from_secs(3), 1000), 0.0);
    }

    #[test]
    fn the_bar_shows_the_share_read_and_the_counts() {
        let s = Sample {
            done: 1500,
            persisted: Some(1000),
            unacknowledged: Some(500),
            failed: Some(0),
            fraction: Some(0.5),
        };
        let line = bar_line(&s, 750.0, Duration::from_secs(65), "publish");
        assert!(
            line.starts_with("[##########----------]  50% published 1,500"),
            "{line}"
        );
        assert!(
            line.contains("persisted 1,000 unacked 500 failed 0, 750/s  1:05"),
            "{line}"
        );
    }
}
