//! PNG and SVG plots drawn with plotters: heatmaps (domain×expert, co-activation, ablation)
//! and load bars. Each plot is drawn once per backend by the same function; the SVG text is
//! returned so the HTML report can inline it.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{AnalyzeError, Result};

/// DejaVu Sans (see `assets/DejaVuSans.LICENSE`): PNG text needs a font, and a fresh machine
/// may have none installed.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

const CELL: i32 = 28;
const LEFT: i32 = 110;
const TOP: i32 = 56;
const BAR_W: i32 = 22;
const BAR_H: i32 = 200;

fn font_ready() {
    REGISTER.call_once(|| {
        // the bytes are a valid TTF shipped with the crate; failure would be a build mistake
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).ok();
    });
}

/// How values map to colours.
#[derive(Clone, Copy, Debug)]
pub enum Scale {
    /// 0..max, light to dark (counts, shares).
    Sequential,
    /// −m..m around white: blue below zero, red above (loss deltas).
    Diverging,
}

fn lerp(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> RGBColor {
    let f = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t.clamp(0.0, 1.0)).round() as u8;
    RGBColor(f(a.0, b.0), f(a.1, b.1), f(a.2, b.2))
}

/// Viridis-like sequential colours from five stops.
fn sequential(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (253, 231, 37),
        (94, 201, 98),
        (33, 145, 140),
        (59, 82, 139),
        (68, 1, 84),
    ];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    lerp(STOPS[i], STOPS[i + 1], t - i as f64)
}

fn color(v: f64, max: f64, scale: Scale) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(200, 200, 200);
    }
    match scale {
        Scale::Sequential => sequential(if max > 0.0 { v / max } else { 0.0 }),
        Scale::Diverging => {
            let t = if max > 0.0 { v / max } else { 0.0 };
            if t >= 0.0 {
                lerp((255, 255, 255), (178, 24, 43), t)
            } else {
                lerp((255, 255, 255), (33, 102, 172), -t)
            }
        }
    }
}

fn err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> AnalyzeError + '_ {
    move |e| AnalyzeError::Plot {
        what: what.to_string(),
        reason: format!("{e:?}"),
    }
}

/// A labelled heatmap of `values[row][col]`.
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub rows: &'a [String],
    pub cols: &'a [String],
    pub values: &'a [Vec<f64>],
    pub scale: Scale,
    /// Print each cell's value when the grid is small enough to read.
    pub annotate: bool,
}

impl Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let w = LEFT + CELL * self.cols.len() as i32 + 30;
        let h = TOP + CELL * self.rows.len() as i32 + 20;
        (
            w.max(360).max(self.title.chars().count() as i32 * 8 + 16) as u32,
            h as u32,
        )
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let e = err::<DrawingAreaErrorKind<DB::ErrorType>>(self.title);
        area.fill(&WHITE).map_err(&e)?;
        let title = ("sans-serif", 16).into_font().color(&BLACK);
        let label = ("sans-serif", 11).into_font().color(&BLACK);
        area.draw(&Text::new(self.title.to_string(), (8, 8), title))
            .map_err(&e)?;
        let max = self
            .values
            .iter()
            .flatten()
            .filter(|v| v.is_finite())
            .fold(0f64, |m, &v| m.max(v.abs()));
        for (j, c) in self.cols.iter().enumerate() {
            area.draw(&Text::new(
                c.clone(),
                (LEFT + CELL * j as i32 + 4, TOP - 16),
                label.clone(),
            ))
            .map_err(&e)?;
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = TOP + CELL * i as i32;
            area.draw(&Text::new(r.clone(), (6, y + CELL / 3), label.clone()))
                .map_err(&e)?;
            for (j, &v) in self.values[i].iter().enumerate() {
                let x = LEFT + CELL * j as i32;
                let c = color(v, max, self.scale);
                area.draw(&Rectangle::new(
                    [(x, y), (x + CELL - 1, y + CELL - 1)],
                    c.filled(),
                ))
                .map_err(&e)?;
                if self.annotate {
                    let dark =
                        matches!(self.scale, Scale::Sequential) && max > 0.0 && v / max > 0.5;
                    let txt =
                        ("sans-serif", 9)
                            .into_font()
                            .color(if dark { &WHITE } else { &BLACK });
                    let s = if v.abs() >= 10.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    };
                    area.draw(&Text::new(s, (x + 2, y + CELL / 3), txt))
                        .map_err(&e)?;
                }
            }
        }
        Ok(())
    }
}

/// Bars of `values` labelled `labels`.
pub struct Bars<'a> {
    pub title: &'a str,
    pub labels: &'a [String],
    pub values: &'a [f64],
}

impl Bars<'_> {
    fn size(&self) -> (u32, u32) {
        let w = (60 + (BAR_W + 6) * self.labels.len() as i32)
            .max(360)
            .max(self.title.chars().count() as i32 * 8 + 16);
        (w as u32, (TOP + BAR_H + 40) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let e = err::<DrawingAreaErrorKind<DB::ErrorType>>(self.title);
        area.fill(&WHITE).map_err(&e)?;
        area.draw(&Text::new(
            self.title.to_string(),
            (8, 8),
            ("sans-serif", 16).into_font(),
        ))
        .map_err(&e)?;
        let max = self.values.iter().cloned().fold(0f64, f64::max);
        let base = TOP + BAR_H;
        let mean = self.values.iter().sum::<f64>() / self.values.len().max(1) as f64;
        for (i, (&v, l)) in self.values.iter().zip(self.labels).enumerate() {
            let x = 40 + (BAR_W + 6) * i as i32;
            let h = if max > 0.0 {
                (v / max * BAR_H as f64) as i32
            } else {
                0
            };
            area.draw(&Rectangle::new(
                [(x, base - h), (x + BAR_W, base)],
                RGBColor(59, 82, 139).filled(),
            ))
            .map_err(&e)?;
            area.draw(&Text::new(
                l.clone(),
                (x, base + 6),
                ("sans-serif", 10).into_font(),
            ))
            .map_err(&e)?;
        }
        if max > 0.0 {
            let y = base - (mean / max * BAR_H as f64) as i32;
            let right = 40 + (BAR_W + 6) * self.values.len() as i32;
            area.draw(&PathElement::new(
                vec![(36, y), (right, y)],
                RED.stroke_width(1),
            ))
            .map_err(&e)?;
            area.draw(&Text::new(
                "mean".to_string(),
                (right + 2, y - 6),
                ("sans-serif", 10).into_font().color(&RED),
            ))
            .map_err(&e)?;
        }
        Ok(())
    }
}

/// Something drawable at a fixed size.
pub trait Plot {
    fn size(&self) -> (u32, u32);
    fn draw_svg(&self, area: &DrawingArea<SVGBackend, Shift>) -> Result<()>;
    fn draw_png(&self, area: &DrawingArea<BitMapBackend, Shift>) -> Result<()>;
}

macro_rules! plot_impl {
    ($t:ty) => {
        impl Plot for $t {
            fn size(&self) -> (u32, u32) {
                <$t>::size(self)
            }
            fn draw_svg(&self, area: &DrawingArea<SVGBackend, Shift>) -> Result<()> {
                self.draw(area)
            }
            fn draw_png(&self, area: &DrawingArea<BitMapBackend, Shift>) -> Result<()> {
                self.draw(area)
            }
        }
    };
}
plot_impl!(Heatmap<'_>);
plot_impl!(Bars<'_>);

/// Writes `<stem>.svg` and `<stem>.png` and returns the SVG text.
pub fn save(plot: &dyn Plot, stem: &Path) -> Result<String> {
    font_ready();
    let size = plot.size();
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        plot.draw_svg(&area)?;
        area.present()
            .map_err(err::<DrawingAreaErrorKind<std::io::Error>>("svg"))?;
    }
    let svg_path = stem.with_extension("svg");
    std::fs::write(&svg_path, &svg).map_err(|e| AnalyzeError::file(&svg_path, e.to_string()))?;
    let png_path = stem.with_extension("png");
    {
        let area = BitMapBackend::new(&png_path, size).into_drawing_area();
        plot.draw_png(&area)?;
        area.present()
            .map_err(|e| AnalyzeError::file(&png_path, format!("{e:?}")))?;
    }
    Ok(svg)
}
