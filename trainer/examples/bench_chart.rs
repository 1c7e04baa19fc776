//! Draws `scripts/bench-predict.sh`'s table as a chart: latency percentiles per host, settings and
//! connection count, with the machine's floor beside them (trainer::evaluate's bar drawing).
//!
//! `bench_chart OUTPUT.txt CHART.png` (the script calls it with its own output).

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: bench_chart BENCH_OUTPUT.txt CHART.png");
    };
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let panels = trainer::evaluate::bench_predict_panels(&text);
    if panels.is_empty() {
        bail!("{input} holds no measurement lines of scripts/bench-predict.sh");
    }
    let height = 420 * u32::try_from(panels.len()).unwrap_or(1);
    trainer::evaluate::panels_chart(std::path::Path::new(output), (1200, height), &panels)?;
    println!("chart: {output}");
    Ok(())
}
