//! The p-values of the G-test: the chi-squared survival function for whole degrees of
//! freedom, in closed form (docs page "How the scores are computed", "The G-test").
//!
//! For `k` degrees of freedom and `y = x / 2`, `P(X > x) = Q(k / 2, y)`, the regularized
//! upper incomplete gamma function, which for a whole `k` is a finite sum of positive
//! terms:
//!
//! ```text
//! k = 2m      Q = e^-y  sum_{j<m} y^j / j!
//! k = 2m + 1  Q = erfc(sqrt y) + e^-y  sum_{j<m} y^(j+1/2) / Gamma(j + 3/2)
//! ```
//!
//! A sum of positive terms loses no precision (relative error about `m` ulps). Below
//! `y = 700` the terms are summed as they are (`e^-y` does not underflow and the sum is
//! below `e^y`); above, in logarithms, where the result either underflows `f32` or the
//! `erfc` term is negligible next to the sum.

use std::sync::OnceLock;

use rayon::prelude::*;

/// Where the direct sum gives way to the sum in logarithms.
const DIRECT_BELOW: f64 = 700.0;
/// `ln` of a p-value below which it is 0 in `f32` (the smallest subnormal is about e^-103).
const NEGLIGIBLE_LN: f64 = -110.0;

/// `P(X > x)` for `X ~ chi2(dof)`, `dof >= 1`: 1 for `x <= 0`.
pub fn chi2_sf(x: f64, dof: u32) -> f64 {
    if x.is_nan() || x <= 0.0 || dof == 0 {
        return 1.0;
    }
    let y = 0.5 * x;
    let (m, odd) = (dof / 2, dof % 2 == 1);
    if y < DIRECT_BELOW {
        let head = if odd { libm::erfc(y.sqrt()) } else { 0.0 };
        if m == 0 {
            return head; // one degree of freedom: no sum (and no e^-y)
        }
        let sum = terms(y, m, odd).sum::<f64>();
        (head + (-y).exp() * sum).min(1.0)
    } else {
        tail_in_logs(y, m, odd)
    }
}

/// The terms of the sum: `y^j / j!` (even) or `y^(j+1/2) / Gamma(j + 3/2)` (odd), `j < m`,
/// each the one before times `y / (j + offset)`, a product with a tabled reciprocal
/// (a division would bound the throughput).
fn terms(y: f64, m: u32, odd: bool) -> impl Iterator<Item = f64> {
    let (first, offset) = if odd {
        (2.0 * (y / std::f64::consts::PI).sqrt(), 1.5)
    } else {
        (1.0, 1.0)
    };
    let tabled = &reciprocals()[usize::from(odd)];
    (0..m).scan(first, move |term, j| {
        let this = *term;
        *term *= match tabled.get(j as usize) {
            Some(&inverse) => y * inverse,
            None => y / (f64::from(j) + offset),
        };
        Some(this)
    })
}

/// Terms whose reciprocal is tabled: `dof` up to about 8,000 (tables of 16 by 16 bins).
const TABLED_TERMS: usize = 4096;

/// `1 / (j + 1)` and `1 / (j + 1.5)` for `j < TABLED_TERMS`, made once.
fn reciprocals() -> &'static [Vec<f64>; 2] {
    static TABLES: OnceLock<[Vec<f64>; 2]> = OnceLock::new();
    TABLES.get_or_init(|| {
        [1.0, 1.5].map(|offset| {
            (0..TABLED_TERMS)
                .map(|j| 1.0 / (j as f64 + offset))
                .collect()
        })
    })
}

/// `e^-y sum(terms)` for a large `y`, in logarithms (the odd case's `erfc(sqrt y)`, below
/// `e^-700`, is negligible wherever the result is not 0 in `f32`).
fn tail_in_logs(y: f64, m: u32, odd: bool) -> f64 {
    if m == 0 {
        return 0.0; // erfc(sqrt y) alone: below e^-700
    }
    let (first, offset) = if odd {
        ((2.0 * (y / std::f64::consts::PI).sqrt()).ln(), 1.5)
    } else {
        (0.0, 1.0)
    };
    let ln_y = y.ln();
    let logs: Vec<f64> = (0..m)
        .scan(first, |log, j| {
            let this = *log;
            *log += ln_y - (f64::from(j) + offset).ln();
            Some(this)
        })
        .collect();
    let largest = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if largest - y < NEGLIGIBLE_LN {
        return 0.0;
    }
    let scaled: f64 = logs.iter().map(|&log| (log - largest).exp()).sum();
    (largest - y + scaled.ln()).exp().min(1.0)
}

/// The p-values of a block of pairs, `f32`, on the current rayon pool: 1 where `dof` is 0.
pub fn pvalues(statistic: &[f64], dof: &[i32], out: &mut [f32]) -> Result<(), String> {
    check_block(statistic, dof, out)?;
    out.par_iter_mut()
        .zip(statistic.par_iter().zip(dof.par_iter()))
        .for_each(|(p, (&x, &k))| *p = chi2_sf(x, k.unsigned_abs()) as f32);
    Ok(())
}

/// As [`pvalues`] for a row block (row-major, `n_cols` columns, the first `n_rows` of them
/// the rows' own genes): only the pairs right of the diagonal are computed, those left of
/// it copied from their mirrors, and the diagonal is 1.
pub fn row_block_pvalues(
    statistic: &[f64],
    dof: &[i32],
    n_cols: usize,
    out: &mut [f32],
) -> Result<(), String> {
    check_block(statistic, dof, out)?;
    let n_rows = out.len().checked_div(n_cols).unwrap_or(0);
    if n_rows * n_cols != out.len() || n_rows > n_cols {
        return Err(format!(
            "a row block of {n_cols} columns has at most {n_cols} rows and whole rows"
        ));
    }
    out.par_chunks_mut(n_cols.max(1))
        .enumerate()
        .for_each(|(r, row)| {
            let at = r * n_cols;
            row[r] = 1.0;
            for c in r + 1..n_cols {
                row[c] = chi2_sf(statistic[at + c], dof[at + c].unsigned_abs()) as f32;
            }
        });
    for r in 0..n_rows {
        for c in 0..r {
            out[r * n_cols + c] = out[c * n_cols + r];
        }
    }
    Ok(())
}

fn check_block(statistic: &[f64], dof: &[i32], out: &[f32]) -> Result<(), String> {
    if statistic.len() != dof.len() || out.len() != dof.len() {
        return Err("statistic, dof and the output must have the same size".into());
    }
    if dof.iter().any(|&k| k < 0) {
        return Err("degrees of freedom cannot be negative".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_by_hand() {
        // chi2(2): e^(-x/2); chi2(1): erfc(sqrt(x/2)); chi2(4): e^(-y) (1 + y).
        for x in [0.1, 1.0, 3.84, 10.0, 50.0] {
            let y: f64 = x / 2.0;
            assert!((chi2_sf(x, 2) - (-y).exp()).abs() <= 1e-15);
            assert!((chi2_sf(x, 1) - libm::erfc(y.sqrt())).abs() <= 1e-15);
            let expected = (-y).exp() * (1.0 + y);
            assert!((chi2_sf(x, 4) - expected).abs() <= 1e-15 * expected.max(1e-300));
        }
        assert_eq!(chi2_sf(0.0, 3), 1.0);
        assert_eq!(chi2_sf(-1.0, 3), 1.0);
        assert!((chi2_sf(3.841_458_820_694_124, 1) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn large_statistics_join_the_direct_sum_and_underflow_to_zero() {
        for dof in [1, 2, 9, 64, 1000, 4001] {
            let below = chi2_sf(2.0 * DIRECT_BELOW - 1e-9, dof);
            let above = chi2_sf(2.0 * DIRECT_BELOW + 1e-9, dof);
            assert!(
                (below - above).abs() <= 1e-9 * below.max(1e-300) || below < 1e-45,
                "dof {dof}: {below} vs {above}"
            );
        }
        assert_eq!(chi2_sf(1e6, 3), 0.0);
        assert!(chi2_sf(1500.0, 2000) > 0.99); // far below its mean: near 1, not 0
    }

    #[test]
    fn block_of_pvalues() {
        let statistic = [0.0, 3.84, 1e4];
        let dof = [0, 1, 4];
        let mut out = [0.0f32; 3];
        pvalues(&statistic, &dof, &mut out).unwrap();
        assert_eq!(out[0], 1.0);
        assert!((out[1] - 0.05004).abs() < 1e-4);
        assert_eq!(out[2], 0.0);
        assert!(pvalues(&statistic, &dof[..2], &mut out).is_err());
        assert!(pvalues(&statistic, &[0, -1, 2], &mut out).is_err());
    }

    #[test]
    fn row_blocks_mirror_their_left_part_and_have_one_on_the_diagonal() {
        // Two rows of a symmetric 3-gene block: rows 0 and 1 against genes 0, 1 and 2.
        let statistic = [0.0, 3.0, 9.0, 3.0, 0.0, 5.0];
        let dof = [0, 2, 4, 2, 0, 1];
        let mut whole = [0.0f32; 6];
        pvalues(&statistic, &dof, &mut whole).unwrap();
        let mut out = [0.0f32; 6];
        // Left of the diagonal the input is ignored: the mirror is copied.
        let scrambled = [7.0, 3.0, 9.0, 1e9, 7.0, 5.0];
        row_block_pvalues(&scrambled, &dof, 3, &mut out).unwrap();
        assert_eq!(out, whole);
        assert!(row_block_pvalues(&statistic[..3], &dof[..3], 2, &mut out[..3]).is_err());
        assert!(row_block_pvalues(&statistic, &dof, 2, &mut out).is_err());
    }

    #[test]
    fn tabled_reciprocals_and_divisions_agree() {
        for dof in [
            (2 * TABLED_TERMS - 2) as u32,
            (2 * TABLED_TERMS + 41) as u32,
        ] {
            let x = f64::from(dof) * 1.01;
            let p = chi2_sf(x, dof);
            assert!(p > 0.2 && p < 0.5, "dof {dof}: {p}");
        }
    }
}
