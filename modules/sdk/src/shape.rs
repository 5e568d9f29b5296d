//! Output shape hints (see [`crate::Context::output`]): a `0` entry is a size
//! not known in advance, an empty hint means no expectation at all.

#[cfg(any(
    test,
    all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")
))]
use crate::{TensorType, tensor::element_count};

fn unknowns(hint: &[u32]) -> usize {
    hint.iter().filter(|&&d| d == 0).count()
}

/// Byte size of an output that fully matches `hint`, when the hint has no
/// unknown entry.
#[cfg(any(
    test,
    all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")
))]
pub(crate) fn exact_bytes(hint: &[u32], ty: TensorType) -> Option<usize> {
    if hint.is_empty() || unknowns(hint) > 0 {
        return None;
    }
    element_count(hint)?.checked_mul(ty.byte_size())
}

/// Product of the known entries of `hint`, in bytes of `ty`.
#[cfg(any(
    test,
    all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")
))]
pub(crate) fn known_bytes(hint: &[u32], ty: TensorType) -> Option<usize> {
    hint.iter()
        .filter(|&&d| d != 0)
        .try_fold(ty.byte_size(), |n, &d| n.checked_mul(d as usize))
}

/// wasip1: the shape of an output that came back as `byte_len` bytes.
#[cfg(any(
    test,
    all(target_arch = "wasm32", target_os = "wasi", target_env = "p1")
))]
pub(crate) fn resolve(hint: &[u32], ty: TensorType, byte_len: usize) -> Result<Vec<u32>, String> {
    let mismatch = || {
        format!(
            "the host returned {byte_len} bytes, which is no {} tensor of shape {hint:?} \
             (0 = any size)",
            ty.name()
        )
    };
    check_hint(hint)?;
    if !byte_len.is_multiple_of(ty.byte_size()) {
        return Err(mismatch());
    }
    let elements = byte_len / ty.byte_size();
    if hint.is_empty() {
        return u32::try_from(elements)
            .map(|n| vec![n])
            .map_err(|_| mismatch());
    }
    let known =
        element_count(&hint.iter().map(|&d| d.max(1)).collect::<Vec<_>>()).ok_or_else(mismatch)?;
    if unknowns(hint) == 0 {
        return if known == elements {
            Ok(hint.to_vec())
        } else {
            Err(mismatch())
        };
    }
    if known == 0 || !elements.is_multiple_of(known) {
        return Err(mismatch());
    }
    let missing = u32::try_from(elements / known).map_err(|_| mismatch())?;
    Ok(hint
        .iter()
        .map(|&d| if d == 0 { missing } else { d })
        .collect())
}

/// wasip2: checks the real shape of an output against the caller's hint.
#[cfg(any(
    test,
    all(target_arch = "wasm32", target_os = "wasi", target_env = "p2")
))]
pub(crate) fn check(hint: &[u32], actual: &[u32]) -> Result<(), String> {
    check_hint(hint)?;
    let fits = hint.is_empty()
        || (hint.len() == actual.len() && hint.iter().zip(actual).all(|(&h, &a)| h == 0 || h == a));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "output has shape {actual:?}, expected {hint:?} (0 = any size)"
        ))
    }
}

fn check_hint(hint: &[u32]) -> Result<(), String> {
    if unknowns(hint) > 1 {
        return Err(format!(
            "shape hint {hint:?} has more than one unknown (0) size, which the byte count \
             of a wasip1 output cannot resolve"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_fills_the_unknown_size() {
        let f32 = TensorType::F32;
        assert_eq!(resolve(&[1, 4], f32, 16), Ok(vec![1, 4]));
        assert_eq!(resolve(&[2, 0, 5], f32, 2 * 7 * 5 * 4), Ok(vec![2, 7, 5]));
        assert_eq!(resolve(&[], f32, 12), Ok(vec![3]));
        assert!(resolve(&[1, 4], f32, 12).is_err());
        assert!(resolve(&[2, 0, 5], f32, 44).is_err());
        assert!(resolve(&[0, 0], f32, 16).is_err());
        assert!(resolve(&[1], f32, 3).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(exact_bytes(&[2, 3], TensorType::F64), Some(48));
        assert_eq!(exact_bytes(&[2, 0], TensorType::F64), None);
        assert_eq!(exact_bytes(&[], TensorType::F64), None);
        assert_eq!(known_bytes(&[2, 0, 3], TensorType::F32), Some(24));
    }

    #[test]
    fn check_compares_known_sizes() {
        assert!(check(&[1, 0, 3], &[1, 9, 3]).is_ok());
        assert!(check(&[], &[1, 9, 3]).is_ok());
        assert!(check(&[1, 0], &[1, 9, 3]).is_err());
        assert!(check(&[1, 2, 3], &[1, 9, 3]).is_err());
    }
}
