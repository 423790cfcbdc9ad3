//! Writes the comparison into docs/benchmarks.md (between two marker lines) and the chart to
//! docs/compare.svg.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::Options;
use crate::table::Table;

const BEGIN: &str = "<!-- netron-bench compare: begin (generated, do not edit by hand) -->";
const END: &str = "<!-- netron-bench compare: end -->";

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// `YYYY-MM-DD` in UTC.
fn date(t: SystemTime) -> String {
    let days = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    format!("{cpus} CPUs online ({cpu}), Linux {kernel}")
}

/// The generated block: machine, date, command, then the tables.
pub(crate) fn block(tables: &[Table], started: SystemTime, opts: &Options) -> String {
    let mut s = format!(
        "{BEGIN}\n\nMeasured {} on {}, with\n`cargo run --release -p netron-bench --features compare -- compare{} --write-docs`.\n\n![Netron vs tonic and tarpc](compare.svg)\n",
        date(started),
        machine(),
        if opts.quick { " --quick" } else { "" },
    );
    for t in tables {
        s.push('\n');
        s.push_str(&t.to_markdown());
    }
    s.push('\n');
    s.push_str(END);
    s
}

/// Replaces the marked block of docs/benchmarks.md (appending it if the markers are missing)
/// and writes docs/compare.svg.
pub(crate) fn write(
    tables: &[Table],
    svg: &str,
    started: SystemTime,
    opts: &Options,
) -> std::io::Result<String> {
    let dir = docs_dir();
    let md = dir.join("benchmarks.md");
    let text = std::fs::read_to_string(&md)?;
    let new = block(tables, started, opts);
    let out = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{new}{}", &text[..a], &text[b + END.len()..]),
        _ => format!("{}\n{new}\n", text.trim_end()),
    };
    std::fs::write(&md, out)?;
    let svg_path = dir.join("compare.svg");
    std::fs::write(&svg_path, svg)?;
    Ok(format!("{} and {}", md.display(), svg_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(date(t), "2026-11-18");
        assert_eq!(date(SystemTime::UNIX_EPOCH), "1970-01-01");
    }
}
