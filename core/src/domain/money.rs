//! Money is an integer number of won. There are no fractions and no negatives.

use serde::Serialize;

/// The largest single charge we accept. It keeps every balance far from
/// `i64::MAX`, so no sum in SQL can overflow.
pub const MAX_CHARGE: i64 = 1_000_000_000;

/// A strictly positive amount of won, at most [`MAX_CHARGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Won(i64);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a positive whole number of won")]
    NotPositive,
    #[error("amount must be at most {MAX_CHARGE} won")]
    TooLarge,
}

impl Won {
    pub fn parse(amount: i64) -> Result<Self, AmountError> {
        if amount <= 0 {
            Err(AmountError::NotPositive)
        } else if amount > MAX_CHARGE {
            Err(AmountError::TooLarge)
        } else {
            Ok(Self(amount))
        }
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Whether `balance` covers `price`: the one rule that keeps balances non-negative.
pub fn covers(balance: i64, price: i64) -> bool {
    balance >= price
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_bounded_amounts_parse() {
        assert_eq!(Won::parse(0), Err(AmountError::NotPositive));
        assert_eq!(Won::parse(-5), Err(AmountError::NotPositive));
        assert_eq!(Won::parse(MAX_CHARGE + 1), Err(AmountError::TooLarge));
        assert_eq!(Won::parse(i64::MAX), Err(AmountError::TooLarge));
        assert_eq!(Won::parse(MAX_CHARGE).unwrap().get(), MAX_CHARGE);
        assert_eq!(Won::parse(1).unwrap().get(), 1);
    }

    #[test]
    fn a_balance_covers_exactly_its_amount() {
        assert!(covers(100, 100));
        assert!(!covers(99, 100));
    }
}
