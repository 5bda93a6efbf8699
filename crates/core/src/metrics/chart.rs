//! Draws a GetMetricWidgetImage chart (`spec/cloudwatch.md` §10.3) into a
//! PNG with `plotters`' bitmap backend: lines over time (`timeSeries`), one
//! bar per series (`bar`) or one wedge per series (`pie`) — bars and wedges
//! show each series' latest value — with the title, the legend and the
//! horizontal annotations.
//!
//! Text is drawn with Noto Sans Regular compiled in from the `ttf-noto-sans`
//! crate and registered with plotters' `ab_glyph` backend as `sans-serif`,
//! so the binary needs no font files on the host. Should registration ever
//! fail, charts are drawn without text rather than not at all.
//!
//! # Invariants
//! - Output depends only on the [`Widget`] and the series: no clock, no
//!   randomness, no host fonts (a unit test renders twice and compares).
//! - Every size from 1×1 to 2000×2000 renders without panicking; images
//!   smaller than [`MIN_CHART_SIDE`] are plain background, since no axis fits.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};

use super::widget::{ChartSeries, LegendPosition, Rgb, View, Widget};

/// Smallest side, in pixels, that gets axes and series drawn.
pub const MIN_CHART_SIDE: u32 = 40;
/// Font family every text style names; the embedded font is registered under it.
const FAMILY: &str = "sans-serif";
const TEXT_PX: u32 = 12;
const TITLE_PX: u32 = 14;
/// CloudWatch draws horizontal annotations red unless told otherwise.
const ANNOTATION_RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const AXIS_GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);
const GRID_GREY: RGBColor = RGBColor(0xe8, 0xe8, 0xe8);
const TEXT_GREY: RGBColor = RGBColor(0x44, 0x44, 0x44);

/// Why a chart could not be drawn (a server fault: inputs are validated).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// plotters refused to draw.
    #[error("draw chart: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("encode png: {0}")]
    Encode(#[from] png::EncodingError),
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_error(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Registers the embedded font once; `false` when it could not be, and text
/// is then left out.
fn text_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    })
}

fn rgb(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// Renders `series` as `widget` asks; returns the PNG file bytes.
pub fn render_png(widget: &Widget, series: &[ChartSeries]) -> Result<Vec<u8>, ChartError> {
    let (width, height) = (widget.width, widget.height);
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        if width >= MIN_CHART_SIDE && height >= MIN_CHART_SIDE {
            draw(&root, widget, series, text_available())?;
        }
        root.present().map_err(draw_error)?;
    }
    encode_png(&pixels, width, height)
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

fn font(px: u32) -> TextStyle<'static> {
    (FAMILY, px).into_font().color(&TEXT_GREY)
}

/// The longest prefix of `text` (with `…` when cut) that fits in `max_px`.
/// Binary search: titles and labels may be tens of thousands of characters.
fn fit(area: &Area<'_>, text: &str, style: &TextStyle<'_>, max_px: u32) -> String {
    let fits = |s: &str| {
        area.estimate_text_size(s, style)
            .is_ok_and(|(width, _)| width <= max_px)
    };
    let chars: Vec<char> = text.chars().collect();
    // No visible glyph is narrower than a pixel, so longer prefixes never fit.
    let longest = chars.len().min(max_px as usize);
    if longest == chars.len() && fits(text) {
        return text.to_owned();
    }
    let cut = |n: usize| chars[..n].iter().collect::<String>() + "…";
    let (mut lo, mut hi) = (0, longest);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&cut(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 && !fits("…") {
        return String::new();
    }
    cut(lo)
}

fn draw(
    root: &Area<'_>,
    widget: &Widget,
    series: &[ChartSeries],
    text: bool,
) -> Result<(), ChartError> {
    let (width, height) = root.dim_in_pixel();
    // Text only where it leaves room for the plot.
    let text = text && width >= 120 && height >= 90;
    let mut body = root.margin(6, 6, 8, 8);
    if let (true, Some(title)) = (text, widget.title.as_deref()) {
        let style = font(TITLE_PX).color(&BLACK);
        let title = fit(&body, title, &style, body.dim_in_pixel().0);
        body.draw(&Text::new(title, (0, 0), style))
            .map_err(draw_error)?;
        body = body.split_vertically(TITLE_PX + 8).1;
    }
    let plot = match (text, widget.legend) {
        (true, LegendPosition::Bottom) => legend_bottom(&body, series)?,
        (true, LegendPosition::Right) => legend_right(&body, series)?,
        _ => body,
    };
    match widget.view {
        View::TimeSeries => time_series(&plot, widget, series, text),
        View::Bar => bars(&plot, widget, series, text),
        View::Pie => pie(&plot, series, text),
    }
}

/// Draws the legend under the plot in rows; returns the area left for the plot.
fn legend_bottom<'a>(body: &Area<'a>, series: &[ChartSeries]) -> Result<Area<'a>, ChartError> {
    if series.is_empty() {
        return Ok(body.clone());
    }
    let (width, height) = body.dim_in_pixel();
    let style = font(TEXT_PX);
    let row_px = TEXT_PX as i32 + 6;
    // At most a third of the height goes to the legend; the rest is cut.
    let max_rows = ((height / 3) as i32 / row_px).max(1);
    let mut placed = Vec::new();
    let (mut x, mut row) = (0i32, 0i32);
    for s in series {
        let label = fit(body, &s.label, &style, width.saturating_sub(20));
        let item_px = 16
            + body
                .estimate_text_size(&label, &style)
                .map(|(w, _)| w as i32)
                .unwrap_or(0);
        if x > 0 && x + item_px > width as i32 {
            x = 0;
            row += 1;
        }
        if row >= max_rows {
            break;
        }
        placed.push((x, row, label, s.color));
        x += item_px + 12;
    }
    let rows = placed.last().map_or(0, |(_, r, _, _)| r + 1);
    let legend_px = rows * row_px + 4;
    let (plot, legend) = body.split_vertically(height as i32 - legend_px);
    for (x, row, label, color) in placed {
        draw_legend_item(&legend, (x, 4 + row * row_px), &label, color)?;
    }
    Ok(plot)
}

/// Draws the legend in a column right of the plot; returns the plot area.
fn legend_right<'a>(body: &Area<'a>, series: &[ChartSeries]) -> Result<Area<'a>, ChartError> {
    if series.is_empty() {
        return Ok(body.clone());
    }
    let (width, height) = body.dim_in_pixel();
    let style = font(TEXT_PX);
    let column_px = (width / 3).min(
        series
            .iter()
            .map(|s| {
                body.estimate_text_size(&s.label, &style)
                    .map(|(w, _)| w)
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
            + 24,
    );
    let (plot, legend) = body.split_horizontally(width as i32 - column_px as i32);
    let row_px = TEXT_PX as i32 + 6;
    for (row, s) in series.iter().enumerate() {
        let y = 4 + row as i32 * row_px;
        if y + row_px > height as i32 {
            break;
        }
        let label = fit(&legend, &s.label, &style, column_px.saturating_sub(24));
        draw_legend_item(&legend, (8, y), &label, s.color)?;
    }
    Ok(plot)
}

fn draw_legend_item(
    area: &Area<'_>,
    (x, y): (i32, i32),
    label: &str,
    color: Rgb,
) -> Result<(), ChartError> {
    let swatch = Rectangle::new([(x, y + 2), (x + 10, y + 12)], rgb(color).filled());
    area.draw(&swatch).map_err(draw_error)?;
    area.draw(&Text::new(label.to_owned(), (x + 15, y + 1), font(TEXT_PX)))
        .map_err(draw_error)
}

/// Lower and upper bound of the value axis: fixed by `yAxis.left` where set,
/// otherwise the data and annotations with 5 % headroom.
fn value_range(
    widget: &Widget,
    values: impl Iterator<Item = f64>,
    include_zero: bool,
) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let annotations = widget.annotations.iter().map(|a| a.value);
    for v in values.chain(annotations).filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 && span.is_finite() {
        span * 0.05
    } else {
        lo.abs().max(1.0) * 0.1
    };
    let lo_pad = if include_zero && lo == 0.0 { 0.0 } else { pad };
    let lo = widget.y_axis.min.unwrap_or(lo - lo_pad);
    let hi = widget.y_axis.max.unwrap_or(hi + pad);
    if lo < hi && (hi - lo).is_finite() {
        return (lo, hi);
    }
    // Only one bound was fixed, on the wrong side of the data, or the values
    // span more than an f64 can: keep the fixed bound, else give up on scale.
    match (widget.y_axis.min, widget.y_axis.max) {
        (Some(min), _) if (min + min.abs().max(1.0)).is_finite() => (min, min + min.abs().max(1.0)),
        (_, Some(max)) if (max - max.abs().max(1.0)).is_finite() => (max - max.abs().max(1.0), max),
        _ => (0.0, 1.0),
    }
}

/// `1.5k`, `12M`, `0.25`: short labels for the value axis.
fn format_value(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let abs = v.abs();
    for (scale, suffix) in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")] {
        if abs >= scale {
            return trim(format!("{:.2}", v / scale)) + suffix;
        }
    }
    if abs > 0.0 && abs < 0.01 {
        return format!("{v:.1e}");
    }
    let text = trim(format!("{v:.2}"));
    if text == "-0" {
        "0".to_owned()
    } else {
        text
    }
}

/// `HH:MM` for ticks less than a day apart, else `MM-DD`, in the widget's timezone.
fn format_time(ms: i64, offset_minutes: i64, step_ms: i64) -> String {
    let local = trailwatch_types::Timestamp::from_millis(ms + offset_minutes * 60_000).to_iso8601();
    let part = if step_ms < DAY_MS {
        local.get(11..16)
    } else {
        local.get(5..10)
    };
    part.unwrap_or_default().to_owned()
}

const DAY_MS: i64 = 86_400_000;

/// Time-axis ticks on round local times (every 5 minutes, hour, day, …), at
/// most `max_ticks` of them; plotters would put them on arbitrary milliseconds.
fn time_ticks(start: i64, end: i64, offset_minutes: i64, max_ticks: i64) -> (i64, Vec<i64>) {
    const MINUTE: i64 = 60_000;
    const STEPS: [i64; 16] = [
        MINUTE,
        2 * MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        60 * MINUTE,
        120 * MINUTE,
        180 * MINUTE,
        360 * MINUTE,
        720 * MINUTE,
        DAY_MS,
        2 * DAY_MS,
        7 * DAY_MS,
        14 * DAY_MS,
        28 * DAY_MS,
    ];
    let range = end - start;
    let step = STEPS
        .iter()
        .copied()
        .find(|step| range / step < max_ticks.max(1))
        .unwrap_or_else(|| (range / max_ticks.max(1) / DAY_MS + 1) * DAY_MS);
    let offset = offset_minutes * 60_000;
    let first = (start + offset + step - 1).div_euclid(step) * step - offset;
    let ticks = (0..)
        .map(|k| first + k * step)
        .take_while(|t| *t <= end)
        .collect();
    (step, ticks)
}

fn time_series(
    area: &Area<'_>,
    widget: &Widget,
    series: &[ChartSeries],
    text: bool,
) -> Result<(), ChartError> {
    let (start, end) = (widget.start.millis(), widget.end.millis());
    let (lo, hi) = value_range(
        widget,
        series.iter().flat_map(|s| s.points.iter().map(|(_, v)| *v)),
        false,
    );
    let (width, height) = area.dim_in_pixel();
    let y_label_px = if text {
        let widest = [lo, hi, (lo + hi) / 2.0]
            .iter()
            .map(|v| {
                area.estimate_text_size(&format_value(*v), &font(TEXT_PX))
                    .map(|(w, _)| w)
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        widest
            + 10
            + if widget.y_axis.label.is_some() {
                TEXT_PX + 6
            } else {
                0
            }
    } else {
        0
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(4)
        .margin_right(8)
        .x_label_area_size(if text { TEXT_PX + 10 } else { 0 })
        .y_label_area_size(y_label_px)
        .build_cartesian_2d(start..end, lo..hi)
        .map_err(draw_error)?;
    let value_label = |v: &f64| format_value(*v);
    if text {
        let mut mesh = chart.configure_mesh();
        // Time ticks are drawn below, on round times. Never 0 labels here:
        // plotters' integer key-point search then overflows.
        mesh.disable_x_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID_GREY)
            .axis_style(AXIS_GREY)
            .set_all_tick_mark_size(0)
            .x_labels(2)
            .x_label_formatter(&|_| String::new())
            .y_labels((height / 40).clamp(2, 8) as usize)
            .y_label_formatter(&value_label)
            .label_style(font(TEXT_PX))
            .axis_desc_style(font(TEXT_PX));
        if let Some(label) = widget.y_axis.label.as_deref() {
            mesh.y_desc(label);
        }
        mesh.draw().map_err(draw_error)?;
        let (step, ticks) = time_ticks(
            start,
            end,
            widget.offset_minutes,
            i64::from(width / 90).max(2),
        );
        for t in ticks {
            let label = format_time(t, widget.offset_minutes, step);
            let label_px = area
                .estimate_text_size(&label, &font(TEXT_PX))
                .map(|(w, _)| w as i32)
                .unwrap_or(0);
            chart
                .draw_series([PathElement::new(vec![(t, lo), (t, hi)], GRID_GREY)])
                .map_err(draw_error)?;
            chart
                .draw_series([
                    EmptyElement::at((t, lo)) + Text::new(label, (-label_px / 2, 5), font(TEXT_PX))
                ])
                .map_err(draw_error)?;
        }
    } else {
        draw_axes(&chart.plotting_area().strip_coord_spec())?;
    }
    let bounds = ((start as f64, end as f64), (lo, hi));
    for s in series {
        let color = rgb(s.color);
        let runs = clipped_runs(&s.points, bounds);
        chart
            .draw_series(
                runs.into_iter()
                    .map(|run| PathElement::new(run, color.stroke_width(2))),
            )
            .map_err(draw_error)?;
        // A lone point has no line through it: mark it.
        if let [(t, v)] = s.points.as_slice() {
            let inside = (start..=end).contains(t) && (lo..=hi).contains(v);
            if inside {
                chart
                    .draw_series(std::iter::once(Circle::new((*t, *v), 3, color.filled())))
                    .map_err(draw_error)?;
            }
        }
    }
    for a in &widget.annotations {
        if a.value < lo || a.value > hi {
            continue;
        }
        let color = a.color.map_or(ANNOTATION_RED, rgb);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(start, a.value), (end, a.value)],
                color.stroke_width(1),
            )))
            .map_err(draw_error)?;
        if let (true, Some(label)) = (text, a.label.as_deref()) {
            let label = Text::new(
                label.to_owned(),
                (4, -(TEXT_PX as i32) - 2),
                font(TEXT_PX).color(&color),
            );
            chart
                .draw_series(std::iter::once(EmptyElement::at((start, a.value)) + label))
                .map_err(draw_error)?;
        }
    }
    if text && series.iter().all(|s| s.points.is_empty()) {
        no_data(&chart.plotting_area().strip_coord_spec())?;
    }
    Ok(())
}

type Bounds = ((f64, f64), (f64, f64));

/// The polyline through `points` cut to `bounds` (time, value), as runs of
/// points to draw: plotters does not clip to the plot area, so a line leaving
/// a fixed `yAxis` range or a bucket before the start would cross the axes.
fn clipped_runs(points: &[(i64, f64)], bounds: Bounds) -> Vec<Vec<(i64, f64)>> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(t, v)| (*t as f64, *v))
        .collect();
    let mut runs: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut open = false;
    for pair in finite.windows(2) {
        let Some((a, b)) = clip_segment(pair[0], pair[1], bounds) else {
            open = false;
            continue;
        };
        let a = (a.0.round() as i64, a.1);
        let b = (b.0.round() as i64, b.1);
        match runs.last_mut() {
            Some(run) if open => run.push(b),
            _ => runs.push(vec![a, b]),
        }
        // The run continues only while the segment ended inside the bounds.
        open = (b.0 as f64, b.1) == (pair[1].0.round(), pair[1].1);
    }
    runs
}

/// The part of segment `a`→`b` inside `bounds` (Liang–Barsky), if any.
fn clip_segment(a: (f64, f64), b: (f64, f64), bounds: Bounds) -> Option<((f64, f64), (f64, f64))> {
    let ((x_lo, x_hi), (y_lo, y_hi)) = bounds;
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x_lo),
        (dx, x_hi - a.0),
        (-dy, a.1 - y_lo),
        (dy, y_hi - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
            continue;
        }
        let r = q / p;
        if p < 0.0 {
            t0 = t0.max(r);
        } else {
            t1 = t1.min(r);
        }
        if t0 > t1 || !r.is_finite() {
            return None;
        }
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * dx, a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

/// The left and bottom axis lines alone, for charts too small for labels.
fn draw_axes(plot: &Area<'_>) -> Result<(), ChartError> {
    let (width, height) = plot.dim_in_pixel();
    let (right, bottom) = (width as i32 - 1, height as i32 - 1);
    plot.draw(&PathElement::new(
        vec![(0, 0), (0, bottom), (right, bottom)],
        AXIS_GREY,
    ))
    .map_err(draw_error)
}

/// The latest finite value of each series, if any.
fn latest(series: &ChartSeries) -> Option<f64> {
    series
        .points
        .iter()
        .rev()
        .map(|(_, v)| *v)
        .find(|v| v.is_finite())
}

fn bars(
    area: &Area<'_>,
    widget: &Widget,
    series: &[ChartSeries],
    text: bool,
) -> Result<(), ChartError> {
    let values: Vec<Option<f64>> = series.iter().map(latest).collect();
    let (lo, hi) = value_range(widget, values.iter().flatten().copied(), true);
    let (_, height) = area.dim_in_pixel();
    let y_label_px = if text {
        [lo, hi]
            .iter()
            .map(|v| {
                area.estimate_text_size(&format_value(*v), &font(TEXT_PX))
                    .map(|(w, _)| w)
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
            + 10
            + if widget.y_axis.label.is_some() {
                TEXT_PX + 6
            } else {
                0
            }
    } else {
        0
    };
    let slots = series.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin_top(4)
        .margin_right(8)
        .x_label_area_size(4)
        .y_label_area_size(y_label_px)
        .build_cartesian_2d(0.0..slots, lo..hi)
        .map_err(draw_error)?;
    let value_label = |v: &f64| format_value(*v);
    if text {
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID_GREY)
            .axis_style(AXIS_GREY)
            .set_all_tick_mark_size(0)
            .x_labels(2)
            .x_label_formatter(&|_| String::new())
            .y_labels((height / 40).clamp(2, 8) as usize)
            .y_label_formatter(&value_label)
            .label_style(font(TEXT_PX))
            .axis_desc_style(font(TEXT_PX));
        if let Some(label) = widget.y_axis.label.as_deref() {
            mesh.y_desc(label);
        }
        mesh.draw().map_err(draw_error)?;
    } else {
        draw_axes(&chart.plotting_area().strip_coord_spec())?;
    }
    // max/min rather than clamp: clamp panics on an empty range.
    let base = 0.0f64.max(lo).min(hi);
    for (i, (s, value)) in series.iter().zip(&values).enumerate() {
        let Some(value) = value else { continue };
        let top = value.max(lo).min(hi);
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, base), (x + 0.85, top)],
                rgb(s.color).filled(),
            )))
            .map_err(draw_error)?;
    }
    for a in &widget.annotations {
        if a.value < lo || a.value > hi {
            continue;
        }
        let color = a.color.map_or(ANNOTATION_RED, rgb);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, a.value), (slots, a.value)],
                color.stroke_width(1),
            )))
            .map_err(draw_error)?;
        if let (true, Some(label)) = (text, a.label.as_deref()) {
            let label = Text::new(
                label.to_owned(),
                (4, -(TEXT_PX as i32) - 2),
                font(TEXT_PX).color(&color),
            );
            chart
                .draw_series(std::iter::once(EmptyElement::at((0.0, a.value)) + label))
                .map_err(draw_error)?;
        }
    }
    if text && values.iter().all(Option::is_none) {
        no_data(&chart.plotting_area().strip_coord_spec())?;
    }
    Ok(())
}

fn pie(area: &Area<'_>, series: &[ChartSeries], text: bool) -> Result<(), ChartError> {
    // Wedges need positive sizes; other series appear in the legend only.
    let wedges: Vec<(f64, Rgb)> = series
        .iter()
        .filter_map(|s| latest(s).filter(|v| *v > 0.0).map(|v| (v, s.color)))
        .collect();
    let total: f64 = wedges.iter().map(|(v, _)| v).sum();
    if wedges.is_empty() || !total.is_finite() {
        return if text { no_data(area) } else { Ok(()) };
    }
    let (width, height) = area.dim_in_pixel();
    let center = (width as f64 / 2.0, height as f64 / 2.0);
    let radius = f64::from(width.min(height)) * 0.42;
    // Clockwise from twelve o'clock, one degree per polygon step at most.
    let mut angle = -std::f64::consts::FRAC_PI_2;
    for (value, color) in &wedges {
        let sweep = value / total * std::f64::consts::TAU;
        let steps = ((sweep.to_degrees()).ceil() as usize).max(1);
        let mut points = vec![(center.0.round() as i32, center.1.round() as i32)];
        for k in 0..=steps {
            let a = angle + sweep * k as f64 / steps as f64;
            points.push((
                (center.0 + radius * a.cos()).round() as i32,
                (center.1 + radius * a.sin()).round() as i32,
            ));
        }
        area.draw(&Polygon::new(points, rgb(*color).filled()))
            .map_err(draw_error)?;
        if text && sweep > 0.3 {
            let mid = angle + sweep / 2.0;
            let percent = format!("{:.0}%", value / total * 100.0);
            let at = (
                (center.0 + radius * 0.6 * mid.cos()).round() as i32 - 10,
                (center.1 + radius * 0.6 * mid.sin()).round() as i32 - 6,
            );
            area.draw(&Text::new(percent, at, font(TEXT_PX).color(&WHITE)))
                .map_err(draw_error)?;
        }
        angle += sweep;
    }
    Ok(())
}

/// CloudWatch's text for a graph without datapoints, centred.
fn no_data(area: &Area<'_>) -> Result<(), ChartError> {
    let message = "No data available.";
    let style = font(TEXT_PX + 1);
    let (width, height) = area.dim_in_pixel();
    let (text_width, text_height) = area
        .estimate_text_size(message, &style)
        .map_err(draw_error)?;
    let at = (
        (width as i32 - text_width as i32) / 2,
        (height as i32 - text_height as i32) / 2,
    );
    area.draw(&Text::new(message, at, style))
        .map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::widget;
    use trailwatch_types::Timestamp;

    const NOW: Timestamp = Timestamp::from_secs(1_719_748_800);

    fn widget(json: &str) -> Widget {
        widget::parse(json, NOW).unwrap()
    }

    fn series(n: usize) -> Vec<ChartSeries> {
        (0..n)
            .map(|i| ChartSeries {
                label: format!("Series number {i}"),
                color: widget::PALETTE[i % 10],
                points: (0..36)
                    .map(|k| {
                        (
                            NOW.millis() - 3 * 3_600_000 + k * 300_000,
                            (k as f64 * (i + 1) as f64).sin() * 10.0 + 20.0,
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    /// Width and height from the IHDR chunk, which must directly follow the signature.
    fn ihdr(png: &[u8]) -> (u32, u32) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&png[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&png[16..20]), be(&png[20..24]))
    }

    #[test]
    fn png_has_signature_and_requested_size() {
        for (w, h) in [
            (600, 400),
            (1, 1),
            (1, 2000),
            (2000, 1),
            (39, 39),
            (40, 40),
            (121, 91),
            (2000, 2000),
        ] {
            let json = format!(
                r#"{{"width":{w},"height":{h},"title":"T","metrics":[["App","A"]],
                "annotations":{{"horizontal":[{{"value":15,"label":"limit"}}]}}}}"#
            );
            let png = render_png(&widget(&json), &series(3)).unwrap();
            assert_eq!(ihdr(&png), (w, h), "{w}x{h}");
        }
    }

    #[test]
    fn every_view_and_legend_renders_and_data_shows() {
        for view in ["timeSeries", "bar", "pie"] {
            for legend in ["bottom", "right", "hidden"] {
                let json = format!(
                    r#"{{"view":"{view}","legend":{{"position":"{legend}"}},"title":"Requests",
                    "yAxis":{{"left":{{"label":"count"}}}},"metrics":[["App","A"]]}}"#
                );
                let w = widget(&json);
                let with = render_png(&w, &series(12)).unwrap();
                let without = render_png(&w, &[]).unwrap();
                assert_eq!(ihdr(&with), (600, 400));
                assert_ne!(
                    with, without,
                    "{view}/{legend}: data must change the picture"
                );
                assert_eq!(
                    with,
                    render_png(&w, &series(12)).unwrap(),
                    "{view}/{legend}: deterministic"
                );
            }
        }
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        assert!(text_available());
        let plain = widget(r#"{"metrics":[["App","A"]]}"#);
        let titled = widget(r#"{"title":"Hello","metrics":[["App","A"]]}"#);
        assert_ne!(
            render_png(&plain, &series(1)).unwrap(),
            render_png(&titled, &series(1)).unwrap()
        );
    }

    #[test]
    fn odd_values_do_not_break_drawing() {
        let w = widget(r#"{"metrics":[["App","A"]],"yAxis":{"left":{"min":100}}}"#);
        let odd = vec![ChartSeries {
            label: String::new(),
            color: widget::PALETTE[0],
            points: vec![
                (NOW.millis() - 1000, f64::NAN),
                (NOW.millis(), -1e300),
                (NOW.millis() - 5, 1e300),
            ],
        }];
        render_png(&w, &odd).unwrap();
        let flat = vec![ChartSeries {
            points: vec![(NOW.millis() - 60_000, 5.0)],
            ..odd[0].clone()
        }];
        for view in ["timeSeries", "bar", "pie"] {
            let w = widget(&format!(r#"{{"view":"{view}","metrics":[["App","A"]]}}"#));
            render_png(&w, &flat).unwrap();
            render_png(&w, &odd).unwrap();
        }
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        assert!(text_available());
        let mut pixels = vec![0u8; 300 * 20 * 3];
        let area = BitMapBackend::with_buffer(&mut pixels, (300, 20)).into_drawing_area();
        let style = font(TEXT_PX);
        assert_eq!(fit(&area, "short", &style, 300), "short");
        let long = "x".repeat(200_000);
        let cut = fit(&area, &long, &style, 100);
        assert!(cut.ends_with('…') && cut.len() > 5, "{cut}");
        assert!(area.estimate_text_size(&cut, &style).unwrap().0 <= 100);
        let one_more = format!("{}…", "x".repeat(cut.chars().count()));
        assert!(
            area.estimate_text_size(&one_more, &style).unwrap().0 > 100,
            "longest prefix"
        );
        assert_eq!(fit(&area, "wide", &style, 0), "");
        // A title of the largest widget renders quickly.
        let json = format!(
            r#"{{"title":"{}","metrics":[["App","A"]]}}"#,
            "W".repeat(90_000)
        );
        let started = std::time::Instant::now();
        render_png(&widget(&json), &series(2)).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn lines_are_cut_at_the_plot_bounds() {
        let bounds = ((0.0, 100.0), (0.0, 10.0));
        let points = [
            (-50, 5.0),
            (50, 5.0),
            (60, 20.0),
            (70, 20.0),
            (80, 5.0),
            (90, 5.0),
        ];
        let runs = clipped_runs(&points, bounds);
        assert_eq!(
            runs,
            vec![
                vec![(0, 5.0), (50, 5.0), (53, 10.0)],
                vec![(77, 10.0), (80, 5.0), (90, 5.0)],
            ]
        );
        assert!(clipped_runs(&[(10, 50.0), (20, 60.0)], bounds).is_empty());
        assert!(clipped_runs(&[(10, f64::NAN), (20, 1.0)], bounds).is_empty());
    }

    #[test]
    fn value_and_time_labels() {
        assert_eq!(format_value(1500.0), "1.5k");
        assert_eq!(format_value(2_000_000.0), "2M");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(-0.0), "0");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_time(NOW.millis(), 0, 3_600_000), "12:00");
        assert_eq!(format_time(NOW.millis(), 90, 3_600_000), "13:30");
        assert_eq!(format_time(NOW.millis(), 0, DAY_MS), "06-30");
        let hour = 3_600_000;
        let start = NOW.millis() - 3 * hour - 7 * 60_000; // 08:53
        let (step, ticks) = time_ticks(start, NOW.millis(), 0, 8);
        assert_eq!(step, 30 * 60_000);
        assert_eq!(
            ticks.first(),
            Some(&(NOW.millis() - 3 * hour)),
            "first tick 09:00"
        );
        assert_eq!(ticks.len(), 7);
        // Round in local time: +0530 puts ticks on local half hours.
        let (_, ticks) = time_ticks(start, NOW.millis(), 330, 8);
        assert_eq!(format_time(ticks[0], 330, 30 * 60_000), "14:30");
        let (step, _) = time_ticks(NOW.millis() - 7 * DAY_MS, NOW.millis(), 0, 6);
        assert_eq!(step, 2 * DAY_MS);
    }
}
