//! chart — SVG pictures of the tuner's evidence, for a person to check it.
//!
//! A verdict like "improved +12.3% [+4.1, +20.0]" is only as good as the runs
//! behind it, so [`distributions`] draws every run of every trial: one band
//! per candidate, its runs as dots with a box (median, IQR) right above the
//! runs of its own interleaved baseline, on one value axis. Outliers, bimodal
//! runs and noisy baselines show at a glance. [`progress`] shows how a search
//! went: each trial's improvement estimate with its 95% interval, and a step
//! line of the best improvement guaranteed so far (the highest interval low),
//! against zero and the minimum effect worth deploying.
//!
//! Both return SVG text; writing it out is the caller's job. The viewer lays
//! out the text (plotters' SVG backend writes `<text>` elements), so no font
//! file is needed. Labels come from users and agents: they are cleaned of
//! characters XML forbids and truncated here, and escaped by the backend.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos::{self, Center, Left, Right};
use plotters::style::text_anchor::{Pos, VPos};

/// The runs of one arm of a trial.
#[derive(Clone, Debug)]
pub struct ArmRuns {
    pub label: String,
    pub values: Vec<f64>,
}

/// One candidate's trial: its runs against its own interleaved baseline, and the verdict.
#[derive(Clone, Debug)]
pub struct TrialRuns {
    pub candidate: ArmRuns,
    pub baseline: ArmRuns,
    /// e.g. "improved +12.3% [+4.1, +20.0] p=0.003" or "no significant change".
    pub verdict: String,
    /// improved / regressed / no change: colours the candidate (green / red / grey).
    pub outcome: Outcome,
    /// "host" or "lab VM (emulated timing)"
    pub place: String,
}

/// What the trial concluded about the candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Improved,
    Regressed,
    NoChange,
}

/// One point of the search's progress: trial number (1-based), candidate label, its improvement estimate (%) and 95% interval.
#[derive(Clone, Debug)]
pub struct ProgressPoint {
    pub trial: usize,
    pub label: String,
    pub improvement_pct: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

const WIDTH: u32 = 1200;
/// Header (title, subtitle, legend) and footer (notes) heights, in pixels.
const HEAD: u32 = 78;
const FOOT: u32 = 34;
/// Longest label drawn, in characters; longer ones end in an ellipsis.
const LABEL_CHARS: usize = 44;
const EMULATED: &str = " (emulated timing)";

const GREEN: RGBColor = RGBColor(30, 140, 60);
const RED_: RGBColor = RGBColor(200, 40, 40);
const GREY: RGBColor = RGBColor(120, 120, 120);
const BASE: RGBColor = RGBColor(60, 100, 170);
const INK: RGBColor = RGBColor(30, 30, 30);
const BEST: RGBColor = RGBColor(110, 50, 170);
const EFFECT: RGBColor = RGBColor(160, 95, 0);

fn font(px: f64, colour: RGBColor, h: HPos) -> TextStyle<'static> {
    // The SVG backend writes font-size = size / 1.24; undo that so `px` is what the viewer gets.
    let style = ("sans-serif", px * 1.24).into_font().color(&colour);
    style.pos(Pos::new(h, VPos::Center))
}

fn bold(px: f64, h: HPos) -> TextStyle<'static> {
    let style = ("sans-serif", px * 1.24, FontStyle::Bold).into_font();
    style.color(&INK).pos(Pos::new(h, VPos::Center))
}

/// XML forbids control characters even escaped, and a newline would break
/// the one-line layout; everything else is escaped by the backend.
fn clean(s: &str, max: usize) -> String {
    let bad = |c: char| c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}';
    let chars: Vec<char> = s.chars().map(|c| if bad(c) { ' ' } else { c }).collect();
    if chars.len() <= max {
        return chars.into_iter().collect();
    }
    let mut out: String = chars[..max.saturating_sub(1)].iter().collect();
    out.push('…');
    out
}

/// Row label of a candidate; the emulated-timing note is never truncated away.
fn row_label(label: &str, place: &str) -> String {
    if place.contains("emulated") {
        clean(label, LABEL_CHARS - EMULATED.len()) + EMULATED
    } else {
        clean(label, LABEL_CHARS)
    }
}

/// Linear-interpolated quantile of sorted, non-empty data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    sorted[i] + (next - sorted[i]) * frac
}

/// An axis range around the values with some air; never empty, so one value
/// or all-equal values still get a readable axis. None when nothing is finite.
fn axis_range(values: impl Iterator<Item = f64>, air: f64) -> Res<Option<(f64, f64)>> {
    let fold = |(l, h): (f64, f64), v: f64| (l.min(v), h.max(v));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), fold);
    let span = hi - lo;
    if lo > hi {
        return Ok(None);
    } else if !span.is_finite() {
        return Err("values span too wide to draw".into());
    } else if span == 0.0 {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        return Ok(Some((lo - d, hi + d)));
    }
    Ok(Some((lo - span * air, hi + span * air)))
}

/// Tick text with as many decimals as the tick spacing needs, no more.
fn fmt_tick(v: f64, span: f64) -> String {
    if span >= 1e7 || v.abs() >= 1e9 {
        return format!("{v:.2e}");
    }
    let decimals = (-(span / 8.0).log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// Deterministic jitter in [-0.5, 0.5) (golden-ratio sequence): same input, same picture.
fn jitter(i: usize) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract() - 0.5
}

/// A white canvas with title, subtitle and a colour key (dot, or line for
/// `true`) at the top right; returns it with the body and footer areas.
fn canvas<'a>(
    svg: &'a mut String,
    height: u32,
    heading: (&str, &str),
    key: &[(RGBColor, &str, bool)],
) -> Res<(Area<'a>, Area<'a>, Area<'a>)> {
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    text(&root, &clean(heading.0, 100), (20, 26), &bold(20.0, Left))?;
    text(&root, heading.1, (20, 52), &font(14.0, INK, Left))?;
    let width = |name: &str| 36 + 7 * name.len() as i32;
    let mut x = WIDTH as i32 - 20 - key.iter().map(|k| width(k.1)).sum::<i32>();
    for &(colour, name, line) in key {
        if line {
            let dash = [(x - 6, 52), (x + 6, 52)];
            root.draw(&PathElement::new(dash, colour.stroke_width(3)))?;
        } else {
            root.draw(&Circle::new((x, 52), 5, colour.filled()))?;
        }
        text(&root, name, (x + 11, 52), &font(13.0, INK, Left))?;
        x += width(name);
    }
    let (_, rest) = root.split_vertically(HEAD);
    let (body, foot) = rest.split_vertically(height - HEAD - FOOT);
    Ok((root, body, foot))
}

fn text(area: &Area, s: &str, pos: (i32, i32), style: &TextStyle) -> Res<()> {
    Ok(area.draw_text(s, style, pos)?)
}

/// A chart with nothing to plot still says so, rather than failing.
fn empty_chart(heading: (&str, &str), message: &str) -> Res<String> {
    let mut svg = String::new();
    {
        let (root, ..) = canvas(&mut svg, 200, heading, &[])?;
        let centre = (WIDTH as i32 / 2, 130);
        text(&root, message, centre, &font(18.0, GREY, Center))?;
        root.present()?;
    }
    Ok(svg)
}

fn footer(root: &Area, foot: &Area, notes: &[String]) -> Res<()> {
    let notes = notes.join("   ·   ");
    text(foot, &notes, (20, 16), &font(12.0, GREY, Left))?;
    Ok(root.present()?)
}

/// Axes, grid and tick labels; `trials` = Some(n) makes x an axis of trial numbers 1..=n.
fn mesh_style(
    chart: &mut Chart,
    desc: [&str; 2],
    ticks: [usize; 2],
    trials: Option<f64>,
) -> Res<()> {
    let (xs, ys) = (chart.x_range(), chart.y_range());
    let x_fmt = |v: &f64| fmt_tick(*v, xs.end - xs.start);
    let y_fmt = |v: &f64| fmt_tick(*v, ys.end - ys.start);
    // Trial numbers: whole ones only, and none on the air around them.
    let last = trials.unwrap_or(0.0);
    let trial_fmt = |v: &f64| {
        let whole = v.fract() == 0.0 && (1.0..=last).contains(v);
        if whole {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(ticks[0]).y_labels(ticks[1]);
    mesh.x_desc(desc[0]).y_desc(desc[1]);
    mesh.x_label_formatter(if trials.is_some() { &trial_fmt } else { &x_fmt });
    mesh.y_label_formatter(&y_fmt).max_light_lines(1);
    mesh.label_style(font(12.0, INK, Center));
    mesh.axis_desc_style(font(13.0, INK, Center));
    mesh.light_line_style(RGBColor(240, 240, 240));
    mesh.bold_line_style(RGBColor(220, 220, 220));
    Ok(mesh.draw()?)
}

/// Distribution chart: one row (or column) per candidate, its runs as jittered dots plus a box (median, IQR) next to its baseline's runs, the metric on the value axis. Title, metric name and unit, and which way is better ("lower is better") printed on the chart. Places that are emulated get "(emulated timing)" in the row label.
pub fn distributions(
    title: &str,
    metric: &str,
    unit: &str,
    lower_is_better: bool,
    trials: &[TrialRuns],
) -> Result<String, String> {
    draw_distributions(title, metric, unit, lower_is_better, trials)
        .map_err(|e| format!("chart: {e}"))
}

fn draw_distributions(
    title: &str,
    metric: &str,
    unit: &str,
    lower_is_better: bool,
    trials: &[TrialRuns],
) -> Res<String> {
    let better = ["higher is better", "lower is better"][lower_is_better as usize];
    let (metric, unit) = (clean(metric, 60), clean(unit, 20));
    let subtitle = format!("{metric} ({unit}) · {better} · dots: runs, box: median and IQR");
    let heading = (title, subtitle.as_str());
    if trials.is_empty() {
        return empty_chart(heading, "no trials");
    }
    let finite = |v: &[f64]| {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let arms: Vec<[Vec<f64>; 2]> = trials
        .iter()
        .map(|t| [finite(&t.candidate.values), finite(&t.baseline.values)])
        .collect();
    let all = trials
        .iter()
        .flat_map(|t| t.candidate.values.iter().chain(&t.baseline.values));
    let skipped = all.filter(|v| !v.is_finite()).count();
    let Some((lo, hi)) = axis_range(arms.iter().flatten().flatten().copied(), 0.06)? else {
        return empty_chart(heading, "no finite values in any trial (NaN/inf skipped)");
    };

    // Each trial gets a fixed-height band, so 30 candidates make a taller chart, not a cramped one.
    let n = trials.len();
    let height = HEAD + 60 * n as u32 + 60 + FOOT;
    let key = [
        (GREEN, "improved", false),
        (RED_, "regressed", false),
        (GREY, "no change", false),
        (BASE, "baseline", false),
    ];
    let mut svg = String::new();
    {
        let (root, body, foot) = canvas(&mut svg, height, heading, &key)?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(340)
            .margin_right(300)
            .margin_top(4)
            .x_label_area_size(50)
            .build_cartesian_2d(lo..hi, 0.0..n as f64)?;
        let arrow = ["→", "←"][lower_is_better as usize];
        let x_desc = format!("{metric} ({unit}) — {better} {arrow}");
        mesh_style(&mut chart, [&x_desc, ""], [8, 0], None)?;

        let (ink_right, base_right) = (font(13.0, INK, Right), font(12.0, BASE, Right));
        for (i, (trial, [cand, base])) in trials.iter().zip(&arms).enumerate() {
            // Trial 0 at the top; its candidate above its baseline within the band.
            let mid = (n - i) as f64 - 0.5;
            if i % 2 == 1 {
                let band = [(lo, mid - 0.5), (hi, mid + 0.5)];
                let shade = RGBColor(246, 246, 246).filled();
                chart.plotting_area().draw(&Rectangle::new(band, shade))?;
            }
            let colour = match trial.outcome {
                Outcome::Improved => GREEN,
                Outcome::Regressed => RED_,
                Outcome::NoChange => GREY,
            };
            draw_arm(&chart, cand, mid + 0.2, colour)?;
            draw_arm(&chart, base, mid - 0.2, BASE)?;

            let at = |x: f64, y: f64, dx: i32| {
                let (px, py) = chart.backend_coord(&(x, y));
                (px + dx, py)
            };
            let cand_label = row_label(&trial.candidate.label, &trial.place);
            let base_label = clean(&trial.baseline.label, LABEL_CHARS - 10);
            let base_label = format!("baseline: {base_label}");
            let verdict = clean(&trial.verdict, 42);
            text(&root, &cand_label, at(lo, mid + 0.2, -12), &ink_right)?;
            text(&root, &base_label, at(lo, mid - 0.2, -12), &base_right)?;
            text(&root, &verdict, at(hi, mid, 12), &font(13.0, colour, Left))?;
        }

        let mut notes = Vec::new();
        if skipped > 0 {
            notes.push(format!("{skipped} non-finite value(s) (NaN/inf) skipped"));
        }
        if trials.iter().any(|t| t.place.contains("emulated")) {
            notes.push("emulated timing: lab VM runs; compare each with its own baseline".into());
        }
        footer(&root, &foot, &notes)?;
    }
    Ok(svg)
}

/// One arm's runs as dots around row `y`, with a box from Q1 to Q3 and a bar at the median.
fn draw_arm(chart: &Chart, sorted: &[f64], y: f64, colour: RGBColor) -> Res<()> {
    if sorted.is_empty() {
        return Ok(());
    }
    let area = chart.plotting_area();
    let [q1, med, q3] = [0.25, 0.5, 0.75].map(|q| quantile(sorted, q));
    let corners = [(q1, y - 0.13), (q3, y + 0.13)];
    area.draw(&Rectangle::new(corners, colour.mix(0.12).filled()))?;
    area.draw(&Rectangle::new(corners, colour.stroke_width(1)))?;
    for (j, &v) in sorted.iter().enumerate() {
        let dot = Circle::new((v, y + 0.2 * jitter(j)), 3, colour.mix(0.6).filled());
        area.draw(&dot)?;
    }
    let median = [(med, y - 0.17), (med, y + 0.17)];
    Ok(area.draw(&PathElement::new(median, colour.stroke_width(3)))?)
}

/// Progress chart: improvement % (y) against trial number (x); each trial a point with its interval as an error bar; a step line for the best guaranteed improvement so far (max of ci_low over trials up to x); a horizontal line at 0 and a dashed one at `min_effect_pct` labelled "minimum effect".
pub fn progress(
    title: &str,
    points: &[ProgressPoint],
    min_effect_pct: f64,
) -> Result<String, String> {
    draw_progress(title, points, min_effect_pct).map_err(|e| format!("chart: {e}"))
}

fn draw_progress(title: &str, points: &[ProgressPoint], min_effect_pct: f64) -> Res<String> {
    let subtitle = "improvement % per trial, bars: 95% interval · higher is better";
    let heading = (title, subtitle);
    if points.is_empty() {
        return empty_chart(heading, "no trials");
    }
    let values = |p: &ProgressPoint| [p.improvement_pct, p.ci_low, p.ci_high];
    let usable = |p: &&ProgressPoint| p.trial >= 1 && values(p).iter().all(|v| v.is_finite());
    let mut good: Vec<&ProgressPoint> = points.iter().filter(usable).collect();
    good.sort_by_key(|p| p.trial);
    let skipped = points.len() - good.len();
    let min_effect = min_effect_pct.is_finite().then_some(min_effect_pct);
    let ys = good.iter().flat_map(|p| values(p));
    let ys = ys.chain([0.0]).chain(min_effect);
    let (lo, hi) = axis_range(ys, 0.08)?.unwrap_or((-1.0, 1.0));

    // The right panel lists every trial's label; it sets the height once there are many.
    const KEY: u32 = 320;
    let height = (HEAD + 420 + FOOT).max(HEAD + 40 + 17 * points.len() as u32 + FOOT);
    let n = good.last().map_or(1, |p| p.trial) as f64;
    // ~150 px of air on the right (of an ~800 px plot) keeps "minimum effect" off the points.
    let x_end = n + 0.5 + 150.0 * (n + 0.5) / 650.0;
    let key = [
        (GREEN, "interval above 0", false),
        (RED_, "below 0", false),
        (GREY, "spans 0", false),
        (BEST, "best guaranteed so far", true),
    ];
    let mut svg = String::new();
    {
        let (root, body, foot) = canvas(&mut svg, height, heading, &key)?;
        let mut chart = ChartBuilder::on(&body)
            .margin_left(10)
            .margin_right(KEY)
            .margin_top(6)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_end, lo..hi)?;
        let ticks = [(n as usize + 4).min(24), 10];
        mesh_style(&mut chart, ["trial", "improvement %"], ticks, Some(n))?;
        let area = chart.plotting_area();
        let line = |y: f64| vec![(0.0, y), (x_end, y)];
        area.draw(&PathElement::new(line(0.0), INK.stroke_width(1)))?;
        if let Some(m) = min_effect {
            let dashed = DashedPathElement::new(line(m), 8, 5, EFFECT.stroke_width(2));
            area.draw(&dashed)?;
            let style = font(12.0, EFFECT, Right).pos(Pos::new(Right, VPos::Bottom));
            // Two decimals at most: 0.1 + 0.2 reads "+0.3", not "+0.30000000000000004".
            let shown = (m * 100.0).round() / 100.0;
            let label = Text::new(format!("minimum effect ({shown:+}%)"), (-6, -4), style);
            area.draw(&(EmptyElement::at((x_end, m)) + label))?;
        }

        // Best guaranteed so far: the running max of interval lows, held until a higher one.
        let mut step: Vec<(f64, f64)> = Vec::new();
        for p in &good {
            let t = p.trial as f64;
            if let Some(&(_, prev)) = step.last() {
                step.extend([(t, prev), (t, prev.max(p.ci_low))]);
            } else {
                step.push((t, p.ci_low));
            }
        }
        if let Some(&(_, last)) = step.last() {
            step.push((x_end, last));
        }
        area.draw(&PathElement::new(step, BEST.stroke_width(2)))?;

        for p in &good {
            let colour = match (p.ci_low > 0.0, p.ci_high < 0.0) {
                (true, _) => GREEN,
                (_, true) => RED_,
                _ => GREY,
            };
            let (t, style) = (p.trial as f64, colour.stroke_width(2));
            area.draw(&PathElement::new([(t, p.ci_low), (t, p.ci_high)], style))?;
            for y in [p.ci_low, p.ci_high] {
                // Caps are fixed in pixels so they look the same however many trials there are.
                let cap = PathElement::new([(-5, 0), (5, 0)], style);
                area.draw(&(EmptyElement::at((t, y)) + cap))?;
            }
            area.draw(&Circle::new((t, p.improvement_pct), 4, colour.filled()))?;
        }

        // Key: trial number → candidate label, in the order given.
        let (x, y0) = ((WIDTH - KEY) as i32 + 60, HEAD as i32 + 14);
        text(&root, "trial", (x, y0), &bold(13.0, Right))?;
        text(&root, "candidate", (x + 12, y0), &bold(13.0, Left))?;
        let (right, left) = (font(12.0, INK, Right), font(12.0, INK, Left));
        for (k, p) in points.iter().enumerate() {
            let y = y0 + 22 + 17 * k as i32;
            text(&root, &p.trial.to_string(), (x, y), &right)?;
            text(&root, &clean(&p.label, 34), (x + 12, y), &left)?;
        }

        let mut notes = Vec::new();
        if skipped > 0 {
            notes.push(format!(
                "{skipped} point(s) with NaN/inf or trial 0 skipped"
            ));
        }
        if min_effect.is_none() {
            notes.push("minimum effect is not finite: its line is left out".into());
        }
        footer(&root, &foot, &notes)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    /// Well-formedness just strong enough to catch unescaped labels: every
    /// `<` opens a tag, every `&` starts an entity, and tags balance.
    fn assert_xmlish(svg: &str) {
        assert!(svg.starts_with("<svg"));
        let (mut stack, mut rest) = (Vec::new(), svg);
        while let Some(i) = rest.find(['<', '&']) {
            rest = &rest[i..];
            if rest.starts_with('&') {
                let entities = ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;"];
                let ok = entities.iter().any(|e| rest.starts_with(e));
                assert!(ok, "bare & at {rest:.30}");
                rest = &rest[1..];
                continue;
            }
            let end = rest.find('>').expect("unclosed tag");
            let tag = &rest[1..end];
            let name = tag.trim_start_matches('/').split(' ').next().unwrap_or("");
            let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric());
            assert!(ok, "bad tag <{tag}>");
            if tag.starts_with('/') {
                assert_eq!(stack.pop(), Some(name));
            } else if !tag.ends_with('/') {
                stack.push(name);
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    const LAB: &str = "lab VM (emulated timing)";

    fn arm(label: &str, values: Vec<f64>) -> ArmRuns {
        let label = label.into();
        ArmRuns { label, values }
    }

    /// A trial of `label` against the kernel default.
    fn trial(label: &str, [c, b]: [Vec<f64>; 2], outcome: Outcome, place: &str) -> TrialRuns {
        let verdict = match outcome {
            Improved => "improved +12.3% [+4.1, +20.0] p=0.003",
            Regressed => "regressed -8.0% [-14.2, -1.9] p=0.02",
            NoChange => "no significant change",
        };
        let (candidate, baseline) = (arm(label, c), arm("kernel default (EEVDF)", b));
        let (verdict, place) = (verdict.into(), place.into());
        TrialRuns {
            candidate,
            baseline,
            verdict,
            outcome,
            place,
        }
    }

    /// Reproducible, irregular runs: candidate around `means.0`, baseline around `means.1`.
    fn runs(means: (f64, f64), spread: f64, n: usize, seed: usize) -> [Vec<f64>; 2] {
        let arm = |mean: f64, s: usize| {
            let noise = |i: usize| jitter(i * 7 + s) + 0.5 * jitter(i * 3 + 1);
            (0..n).map(|i| mean + spread * noise(i)).collect()
        };
        [arm(means.0, seed), arm(means.1, seed + 1)]
    }

    fn example_trials() -> Vec<TrialRuns> {
        let long = r#"agent idea: a<b&"c" with a rather long description that goes on"#;
        let table = [
            ("scx_lavd", (410.0, 470.0), Improved, "host"),
            (
                "scx_bpfland --slice-us 5000",
                (520.0, 475.0),
                Regressed,
                "host",
            ),
            ("migration_cost_ns=250000", (468.0, 472.0), NoChange, LAB),
            (long, (440.0, 465.0), Improved, "host"),
        ];
        let row = |(i, (label, means, outcome, place))| {
            trial(label, runs(means, 60.0, 12 - i, 2 * i), outcome, place)
        };
        table.into_iter().enumerate().map(row).collect()
    }

    fn point(trial: usize, label: &str, [e, l, h]: [f64; 3]) -> ProgressPoint {
        let label = label.into();
        ProgressPoint {
            trial,
            label,
            improvement_pct: e,
            ci_low: l,
            ci_high: h,
        }
    }

    fn example_points() -> Vec<ProgressPoint> {
        vec![
            point(1, "scx_rusty", [3.0, -4.0, 10.0]),
            point(2, "scx_lavd", [12.3, 4.1, 20.0]),
            point(3, "scx_bpfland", [-8.0, -14.2, -1.9]),
            point(4, "scx_lavd --performance", [6.0, 1.0, 11.0]),
            point(5, "scx_lavd + migration_cost", [15.0, 9.5, 20.5]),
            point(6, r#"a<b&"c""#, [2.0, -3.0, 7.0]),
        ]
    }

    fn dist(trials: &[TrialRuns]) -> String {
        let svg = distributions("p99 latency", "latency", "µs", true, trials).unwrap();
        assert_xmlish(&svg);
        svg
    }

    #[test]
    fn distributions_shows_title_labels_direction_and_escapes() {
        let svg = dist(&example_trials());
        let wanted = "p99 latency|lower is better|scx_lavd|scx_bpfland --slice-us 5000|\
                      migration_cost_ns=250000 (emulated timing)|no significant change";
        for s in wanted.split('|') {
            assert!(svg.contains(s), "missing {s}");
        }
        assert!(svg.contains("a&lt;b&amp;&quot;c&quot;") && !svg.contains("a<b"));
        assert!(svg.contains('…') && !svg.contains("goes on"), "truncated");
    }

    #[test]
    fn progress_shows_title_labels_lines_and_escapes() {
        let svg = progress("search progress", &example_points(), 5.0).unwrap();
        assert_xmlish(&svg);
        let wanted = "search progress|minimum effect (+5%)|best guaranteed|scx_lavd --perf";
        for s in wanted.split('|') {
            assert!(svg.contains(s), "missing {s}");
        }
        assert!(svg.contains("a&lt;b&amp;&quot;c&quot;") && !svg.contains("a<b"));
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let weird = "x\u{0}y\nz<&>'\"".repeat(30);
        let one = |label: &str, c: &[f64], b: &[f64], outcome, place: &str| {
            vec![trial(label, [c.to_vec(), b.to_vec()], outcome, place)]
        };
        let many = |i| {
            trial(
                &format!("cand {i}"),
                runs((i as f64, 0.0), 9.0, 6, i),
                NoChange,
                "",
            )
        };
        let cases = [
            vec![],
            one("one", &[5.0], &[5.0], NoChange, "host"),
            one("equal", &[2.0; 5], &[2.0; 5], NoChange, "host"),
            one("zeros", &[0.0; 3], &[0.0; 3], NoChange, LAB),
            one("nan", &[nan, 1.0, inf], &[-inf, 2.0], Improved, "host"),
            one("all nan", &[nan], &[nan], Regressed, "host"),
            one("empty", &[], &[], NoChange, "host"),
            one(&weird, &[1.0, 2.0], &[3.0], Improved, &weird),
            (0..30).map(many).collect(),
        ];
        for trials in &cases {
            assert_xmlish(&distributions(&weird, &weird, &weird, false, trials).unwrap());
        }
        assert!(dist(&cases[0]).contains("no trials"));
        assert!(dist(&cases[4]).contains("3 non-finite"));
        assert!(dist(&cases[5]).contains("no finite values"));
        assert!(dist(&cases[8]).contains("cand 29"));
        let huge = one("x", &[-1e308, 1e308], &[], NoChange, "host");
        assert!(distributions("t", "m", "u", true, &huge).is_err());

        let p = |t, v| point(t, &weird, v);
        let line = |t: usize| p(t, [t as f64, t as f64 - 3.0, t as f64 + 3.0]);
        let point_cases = [
            vec![],
            vec![p(1, [0.0; 3])],
            vec![p(1, [nan, 1.0, 2.0]), p(2, [1.0, -inf, 2.0])],
            vec![p(0, [1.0, 0.0, 2.0])],
            (1..=40).map(line).collect(),
        ];
        for pts in &point_cases {
            for m in [5.0, 0.1 + 0.2, nan] {
                assert_xmlish(&progress(&weird, pts, m).unwrap());
            }
        }
        assert!(progress("t", &[], 5.0).unwrap().contains("no trials"));
        assert!(progress("t", &point_cases[1], 0.1 + 0.2)
            .unwrap()
            .contains("(+0.3%)"));
        let svg = progress("t", &point_cases[2], nan).unwrap();
        assert!(svg.contains("2 point(s)") && svg.contains("line is left out"));
    }

    #[test]
    fn helpers() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.25), 1.25);
        assert_eq!(quantile(&[7.0], 0.75), 7.0);
        let cleaned = [clean("abc", 3), clean("abcd", 3), clean("a\nb", 5)];
        assert_eq!(cleaned, ["abc", "ab…", "a b"]);
        assert!(row_label(&"x".repeat(99), "lab VM (emulated timing)").ends_with(EMULATED));
        let equal = axis_range([2.0, 2.0].into_iter(), 0.1).unwrap();
        assert_eq!(equal, Some((1.9, 2.1)));
        assert_eq!(axis_range([f64::NAN].into_iter(), 0.1).unwrap(), None);
        assert_eq!(fmt_tick(412.345, 200.0), "412");
        assert_eq!(fmt_tick(0.01234, 0.05), "0.012");
    }

    /// Writes the examples for a person to look at; errors are ignored on purpose.
    #[test]
    fn write_examples() {
        let dir = std::path::Path::new("/tmp/chart-scratch/examples");
        let _ = std::fs::create_dir_all(dir);
        let title = "p99 wakeup latency by candidate";
        let trials = example_trials();
        if let Ok(svg) = distributions(title, "wakeup latency p99", "µs", true, &trials) {
            let _ = std::fs::write(dir.join("distributions.svg"), svg);
        }
        if let Ok(svg) = progress("search progress: schbench on host", &example_points(), 5.0) {
            let _ = std::fs::write(dir.join("progress.svg"), svg);
        }
    }
}
