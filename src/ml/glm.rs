//! Linear models: multinomial logistic regression (L2, L-BFGS), and linear / ridge
//! regression by normal equations from partial sums that partitions compute alone.
//!
//! In: dense features, column-major `f32` (`x[j * rows + i]` is row i, feature j),
//! and targets (class indices, or values). Out: fitted coefficients that predict on
//! raw rows. Must not: depend on thread count (sums are ordered and deterministic),
//! or panic on degenerate data (a singular system is an error that says why).

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GlmError {
    #[error("no rows to fit")]
    Empty,
    #[error(
        "the features are linearly dependent (the system is singular); drop a duplicated column or use ridge with alpha > 0"
    )]
    Singular,
    #[error("{0} features but the model has {1}")]
    Shape(usize, usize),
    #[error("the target has {0} class; logistic regression needs at least 2")]
    OneClass(usize),
}

/// Softmax regression coefficients: `w[j * k + c]` for feature j, class c.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub features: usize,
    pub classes: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    /// L-BFGS iterations run, and whether the gradient tolerance was reached.
    pub iterations: u32,
    pub converged: bool,
}

pub struct LogisticOptions {
    /// Inverse L2 strength (scikit-learn's C).
    pub c: f64,
    pub max_iter: u32,
    pub tol: f64,
    pub fit_intercept: bool,
}

/// scores[i * k + c] = x_i · w_c + b_c, for all rows (row-major n × k).
fn scores(x: &[f32], rows: usize, d: usize, w: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    for i in 0..rows {
        out[i * k..(i + 1) * k].copy_from_slice(b);
    }
    // out (n×k, row-major) += X (n×d, column-major) · W (d×k, row-major)
    unsafe {
        // SAFETY: slices hold exactly rows*d, d*k and rows*k elements with the strides given.
        matrixmultiply::sgemm(
            rows,
            d,
            k,
            1.0,
            x.as_ptr(),
            1,
            rows as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            out.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

fn softmax_rows(s: &mut [f32], k: usize) {
    for row in s.chunks_mut(k) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// Objective: mean cross-entropy + ||W||² / (2·C·n) (scikit-learn's, divided by n).
/// Returns (loss, gradient over [w, b]).
/// The data and settings of one logistic fit.
struct Problem<'a> {
    x: &'a [f32],
    y: &'a [u32],
    rows: usize,
    d: usize,
    k: usize,
    c: f64,
    fit_b: bool,
}

fn objective(pr: &Problem, params: &[f32], buf: &mut Vec<f32>) -> (f64, Vec<f32>) {
    let Problem {
        x,
        y,
        rows,
        d,
        k,
        c,
        fit_b,
    } = *pr;
    let (w, b) = params.split_at(d * k);
    buf.resize(rows * k, 0.0);
    scores(x, rows, d, w, b, k, buf);
    let mut loss = 0.0f64;
    for (i, row) in buf.chunks_mut(k).enumerate() {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
        loss += (lse - row[y[i] as usize]) as f64;
        for v in row.iter_mut() {
            *v = (*v - lse).exp();
        }
        row[y[i] as usize] -= 1.0;
    }
    let n = rows as f64;
    loss /= n;
    let mut grad = vec![0.0f32; d * k + k];
    // G_w (d×k) = Xᵀ (d×n) · (P − Y) (n×k) / n
    unsafe {
        // SAFETY: as in `scores`; Xᵀ is X with swapped strides.
        matrixmultiply::sgemm(
            d,
            rows,
            k,
            (1.0 / n) as f32,
            x.as_ptr(),
            rows as isize,
            1,
            buf.as_ptr(),
            k as isize,
            1,
            0.0,
            grad.as_mut_ptr(),
            k as isize,
            1,
        );
    }
    if fit_b {
        for row in buf.chunks(k) {
            for (g, v) in grad[d * k..].iter_mut().zip(row) {
                *g += v / n as f32;
            }
        }
    }
    let reg = 1.0 / (c * n);
    let mut sq = 0.0f64;
    for (g, wv) in grad[..d * k].iter_mut().zip(w) {
        sq += (*wv as f64) * (*wv as f64);
        *g += (reg as f32) * wv;
    }
    loss += 0.5 * reg * sq;
    (loss, grad)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Fit by L-BFGS (memory 10) with a backtracking Armijo line search.
pub fn fit_logistic(
    x: &[f32],
    y: &[u32],
    rows: usize,
    classes: usize,
    o: &LogisticOptions,
) -> Result<Logistic, GlmError> {
    if rows == 0 {
        return Err(GlmError::Empty);
    }
    if classes < 2 {
        return Err(GlmError::OneClass(classes));
    }
    let d = x.len() / rows;
    let k = classes;
    let np = d * k + k;
    let mut p = vec![0.0f32; np];
    let mut buf = Vec::new();
    let pr = Problem {
        x,
        y,
        rows,
        d,
        k,
        c: o.c,
        fit_b: o.fit_intercept,
    };
    let (mut f, mut g) = objective(&pr, &p, &mut buf);
    let mut hist: Vec<(Vec<f32>, Vec<f32>, f64)> = Vec::new();
    let mut iterations = 0;
    let mut converged = false;
    for _ in 0..o.max_iter {
        let gmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        if gmax <= o.tol {
            converged = true;
            break;
        }
        iterations += 1;
        // Two-loop recursion: direction = −H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(yv) {
                *qi -= (a as f32) * yi;
            }
            alphas.push(a);
        }
        if let Some((s, yv, _)) = hist.last() {
            let gamma = dot(s, yv) / dot(yv, yv).max(1e-30);
            q.iter_mut().for_each(|v| *v *= gamma as f32);
        }
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let bta = rho * dot(yv, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += ((a - bta) as f32) * si;
            }
        }
        let dir: Vec<f32> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        let dir = if slope >= 0.0 {
            hist.clear();
            slope = -dot(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            dir
        };
        let mut step = if hist.is_empty() {
            1.0 / (dot(&g, &g).sqrt().max(1e-12))
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            let cand: Vec<f32> = p
                .iter()
                .zip(&dir)
                .map(|(a, b)| a + (step as f32) * b)
                .collect();
            let (fc, gc) = objective(&pr, &cand, &mut buf);
            if fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc, gc)) = accepted else {
            break;
        };
        let s: Vec<f32> = cand.iter().zip(&p).map(|(a, b)| a - b).collect();
        let yv: Vec<f32> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            hist.push((s, yv, 1.0 / sy));
            if hist.len() > 10 {
                hist.remove(0);
            }
        }
        let done = (f - fc).abs() <= 1e-12 * f.abs().max(1.0);
        p = cand;
        f = fc;
        g = gc;
        if done {
            converged = true;
            break;
        }
    }
    let (w, b) = p.split_at(d * k);
    Ok(Logistic {
        features: d,
        classes: k,
        w: w.to_vec(),
        b: b.to_vec(),
        iterations,
        converged,
    })
}

impl Logistic {
    /// Class probabilities, row-major n × k.
    pub fn predict_proba(&self, x: &[f32], rows: usize) -> Result<Vec<f32>, GlmError> {
        if rows > 0 && x.len() / rows != self.features {
            return Err(GlmError::Shape(x.len() / rows.max(1), self.features));
        }
        let mut out = vec![0.0f32; rows * self.classes];
        scores(
            x,
            rows,
            self.features,
            &self.w,
            &self.b,
            self.classes,
            &mut out,
        );
        softmax_rows(&mut out, self.classes);
        Ok(out)
    }
}

/// Sufficient statistics of a least-squares fit over one partition; partitions
/// add them up, so the rows are never gathered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialStats {
    /// Features plus one for the intercept column.
    pub dim: usize,
    /// Upper triangle of [X 1]ᵀ[X 1], row-major dim × dim (full matrix stored).
    pub xtx: Vec<f64>,
    pub xty: Vec<f64>,
    pub rows: u64,
}

impl PartialStats {
    pub fn of(x: &[f32], y: &[f64], rows: usize) -> PartialStats {
        let d = x.len().checked_div(rows).unwrap_or(0);
        let dim = d + 1;
        let mut xtx = vec![0.0f64; dim * dim];
        let mut xty = vec![0.0f64; dim];
        let col = |j: usize, i: usize| if j == d { 1.0 } else { x[j * rows + i] as f64 };
        for a in 0..dim {
            for b in a..dim {
                let s: f64 = (0..rows).map(|i| col(a, i) * col(b, i)).sum();
                xtx[a * dim + b] = s;
                xtx[b * dim + a] = s;
            }
            xty[a] = (0..rows).map(|i| col(a, i) * y[i]).sum();
        }
        PartialStats {
            dim,
            xtx,
            xty,
            rows: rows as u64,
        }
    }

    /// Add another partition's sums (in a fixed order, for identical results).
    pub fn merge(&mut self, o: &PartialStats) -> Result<(), GlmError> {
        if self.rows == 0 {
            *self = o.clone();
            return Ok(());
        }
        if o.dim != self.dim {
            return Err(GlmError::Shape(o.dim - 1, self.dim - 1));
        }
        self.xtx.iter_mut().zip(&o.xtx).for_each(|(a, b)| *a += b);
        self.xty.iter_mut().zip(&o.xty).for_each(|(a, b)| *a += b);
        self.rows += o.rows;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub coef: Vec<f64>,
    pub intercept: f64,
}

/// Solve (XᵀX + αI)β = Xᵀy by Cholesky; the intercept is not penalized.
pub fn solve_linear(s: &PartialStats, alpha: f64, fit_intercept: bool) -> Result<Linear, GlmError> {
    if s.rows == 0 {
        return Err(GlmError::Empty);
    }
    let d = s.dim - 1;
    // Without an intercept, drop the ones column.
    let m = if fit_intercept { s.dim } else { d };
    let mut a = vec![0.0f64; m * m];
    let mut rhs = vec![0.0f64; m];
    for i in 0..m {
        for j in 0..m {
            a[i * m + j] = s.xtx[i * s.dim + j];
        }
        rhs[i] = s.xty[i];
        if i < d {
            a[i * m + i] += alpha;
        }
    }
    // Cholesky: A = L Lᵀ. A column is dependent on the ones before it when
    // elimination leaves almost nothing of its own diagonal: relative to that
    // column, not to the largest (a year column beside an area column in
    // m² is not singular, only of another scale).
    let own: Vec<f64> = (0..m).map(|i| a[i * m + i].abs()).collect();
    for j in 0..m {
        let mut diag = a[j * m + j];
        for k in 0..j {
            diag -= a[j * m + k] * a[j * m + k];
        }
        if diag <= 1e-12 * own[j].max(f64::MIN_POSITIVE) {
            return Err(GlmError::Singular);
        }
        let l = diag.sqrt();
        a[j * m + j] = l;
        for i in j + 1..m {
            let mut v = a[i * m + j];
            for k in 0..j {
                v -= a[i * m + k] * a[j * m + k];
            }
            a[i * m + j] = v / l;
        }
    }
    let mut z = rhs;
    for i in 0..m {
        for k in 0..i {
            z[i] -= a[i * m + k] * z[k];
        }
        z[i] /= a[i * m + i];
    }
    for i in (0..m).rev() {
        for k in i + 1..m {
            z[i] -= a[k * m + i] * z[k];
        }
        z[i] /= a[i * m + i];
    }
    let intercept = if fit_intercept { z[d] } else { 0.0 };
    z.truncate(d);
    Ok(Linear { coef: z, intercept })
}

impl Linear {
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f64>, GlmError> {
        let d = self.coef.len();
        if rows > 0 && x.len() != rows * d {
            return Err(GlmError::Shape(x.len() / rows, d));
        }
        let mut out = vec![self.intercept; rows];
        for (j, c) in self.coef.iter().enumerate() {
            for (i, o) in out.iter_mut().enumerate() {
                *o += c * x[j * rows + i] as f64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_regression_recovers_a_line_from_two_partitions() {
        // b = 4a + 3, exactly.
        let a1: Vec<f32> = (0..50).map(|i| i as f32 / 10.0).collect();
        let a2: Vec<f32> = (50..100).map(|i| i as f32 / 10.0).collect();
        let y = |a: &[f32]| a.iter().map(|v| 4.0 * *v as f64 + 3.0).collect::<Vec<_>>();
        let mut s = PartialStats::of(&a1, &y(&a1), 50);
        s.merge(&PartialStats::of(&a2, &y(&a2), 50)).unwrap();
        let m = solve_linear(&s, 0.0, true).unwrap();
        assert!(
            (m.coef[0] - 4.0).abs() < 1e-6 && (m.intercept - 3.0).abs() < 1e-5,
            "{m:?}"
        );
        assert_eq!(m.predict(&[1.0], 1).unwrap(), vec![m.coef[0] + m.intercept]);
    }

    #[test]
    fn ridge_shrinks_and_singular_is_an_error() {
        let x: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * *v as f64).collect();
        let s = PartialStats::of(&x, &y, 20);
        let ols = solve_linear(&s, 0.0, true).unwrap();
        let ridge = solve_linear(&s, 1000.0, true).unwrap();
        assert!(ridge.coef[0].abs() < ols.coef[0].abs());
        // Two identical columns.
        let xx: Vec<f32> = x.iter().chain(x.iter()).cloned().collect();
        assert_eq!(
            solve_linear(&PartialStats::of(&xx, &y, 20), 0.0, true),
            Err(GlmError::Singular)
        );
    }

    #[test]
    fn columns_of_very_different_scales_are_not_singular() {
        // An area in the tens of thousands beside a year near 2000 (nearly
        // parallel to the intercept column, but not dependent on it).
        let n = 500;
        let area: Vec<f32> = (0..n)
            .map(|i| 5_000.0 + ((i * 7919) % 20_000) as f32)
            .collect();
        let year: Vec<f32> = (0..n).map(|i| 1950.0 + ((i * 31) % 60) as f32).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 3.0 * area[i] as f64 + 1_000.0 * year[i] as f64 - 5.0)
            .collect();
        let x: Vec<f32> = area.iter().chain(&year).copied().collect();
        let fit = solve_linear(&PartialStats::of(&x, &y, n), 0.0, true).unwrap();
        assert!((fit.coef[0] - 3.0).abs() < 1e-3, "{fit:?}");
        assert!((fit.coef[1] - 1_000.0).abs() < 1e-1, "{fit:?}");
    }

    #[test]
    fn logistic_separates_three_blobs() {
        // Three well-separated clusters in 2-D.
        let centers = [(0.0f32, 0.0f32), (5.0, 5.0), (0.0, 5.0)];
        let (mut xs, mut ys, mut cls) = (vec![], vec![], vec![]);
        for i in 0..300 {
            let c = i % 3;
            let jitter = ((i * 7919) % 100) as f32 / 100.0 - 0.5;
            xs.push(centers[c].0 + jitter);
            ys.push(centers[c].1 - jitter);
            cls.push(c as u32);
        }
        let x: Vec<f32> = xs.iter().chain(ys.iter()).cloned().collect();
        let m = fit_logistic(
            &x,
            &cls,
            300,
            3,
            &LogisticOptions {
                c: 1.0,
                max_iter: 200,
                tol: 1e-5,
                fit_intercept: true,
            },
        )
        .unwrap();
        let p = m.predict_proba(&x, 300).unwrap();
        let correct = (0..300)
            .filter(|&i| {
                let row = &p[i * 3..i * 3 + 3];
                let best = (0..3).max_by(|a, b| row[*a].total_cmp(&row[*b])).unwrap();
                best as u32 == cls[i]
            })
            .count();
        assert_eq!(correct, 300);
        assert!((p[0..3].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
