//! Disjunctive normal form: `or` compiles to several conjunctions of (possibly negated)
//! atomic predicates. The matchers index each conjunction; an event matching several is
//! still delivered once.

use crate::ast::{Expr, Pred};

/// Most conjunctions a filter may expand to.
pub const MAX_CLAUSES: usize = 64;

/// A possibly negated atomic predicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lit {
    /// The predicate.
    pub pred: Pred,
    /// True for `not pred` (e.g. `a != v` is `not a = v`: true when `a` is absent).
    pub neg: bool,
}

/// A conjunction: all literals must hold. Empty means "true".
pub type Clause = Vec<Lit>;

/// The expansion needs more than [`MAX_CLAUSES`] conjunctions.
#[derive(Debug)]
pub(crate) struct TooBig;

/// Converts `e` to DNF: contradictory conjunctions (`x and not x`) are dropped, duplicate
/// literals and duplicate conjunctions removed. An empty result never matches.
pub(crate) fn to_dnf(e: &Expr) -> Result<Vec<Clause>, TooBig> {
    let mut out = go(e, false)?;
    for c in &mut out {
        dedup(c);
    }
    out.retain(|c| {
        !c.iter()
            .any(|l| c.iter().any(|m| m.neg != l.neg && m.pred == l.pred))
    });
    let mut uniq: Vec<Clause> = Vec::with_capacity(out.len());
    for c in out {
        if !uniq
            .iter()
            .any(|u| u.len() == c.len() && c.iter().all(|l| u.contains(l)))
        {
            uniq.push(c);
        }
    }
    Ok(uniq)
}

fn dedup(c: &mut Clause) {
    let mut i = 0;
    while i < c.len() {
        if c[..i].contains(&c[i]) {
            c.remove(i);
        } else {
            i += 1;
        }
    }
}

fn go(e: &Expr, neg: bool) -> Result<Vec<Clause>, TooBig> {
    Ok(match e {
        Expr::True => {
            if neg {
                vec![]
            } else {
                vec![vec![]]
            }
        }
        Expr::Pred(p) => vec![vec![Lit {
            pred: p.clone(),
            neg,
        }]],
        Expr::Not(inner) => go(inner, !neg)?,
        Expr::And(v) | Expr::Or(v) => {
            let conj = matches!(e, Expr::And(_)) != neg;
            if conj {
                let mut acc: Vec<Clause> = vec![vec![]];
                for child in v {
                    let d = go(child, neg)?;
                    if acc.len() * d.len() > MAX_CLAUSES {
                        return Err(TooBig);
                    }
                    let mut next = Vec::with_capacity(acc.len() * d.len());
                    for a in &acc {
                        for b in &d {
                            let mut c = a.clone();
                            c.extend(b.iter().cloned());
                            next.push(c);
                        }
                    }
                    acc = next;
                }
                acc
            } else {
                let mut acc = Vec::new();
                for child in v {
                    acc.extend(go(child, neg)?);
                    if acc.len() > MAX_CLAUSES {
                        return Err(TooBig);
                    }
                }
                acc
            }
        }
    })
}
