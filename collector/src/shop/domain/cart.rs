//! Carts: always the signed-in user's own. A cart is found by its owner, never by an id
//! from the request, so there is no other cart to reach.

use serde::Serialize;

use super::user::UserId;

/// Distinct products one cart holds at most.
pub const MAX_LINES: usize = 50;
/// Most of one product in a cart.
pub const MAX_QUANTITY: u32 = 99;

/// A product code: 1–32 characters of `A–Z`, `0–9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Sku(String);

/// A quantity from 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Quantity(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error("a product code is 1 to 32 characters of A-Z, 0-9 and -")]
    InvalidSku,
    #[error("a quantity is from 1 to {MAX_QUANTITY}")]
    InvalidQuantity,
    #[error("a cart holds at most {MAX_LINES} products")]
    TooManyLines,
    #[error("the product is not in the cart")]
    NotInCart,
}

impl Sku {
    pub fn parse(text: &str) -> Result<Self, CartError> {
        let ok = (1..=32).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Sku(text.to_string()))
        } else {
            Err(CartError::InvalidSku)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Quantity {
    pub fn new(n: u32) -> Result<Self, CartError> {
        if (1..=MAX_QUANTITY).contains(&n) {
            Ok(Quantity(n))
        } else {
            Err(CartError::InvalidQuantity)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CartLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// A cart's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CartId(pub uuid::Uuid);

/// A user's cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cart {
    /// The id a client names the cart by; never enough to reach it (every access is
    /// checked against the session's user).
    pub id: CartId,
    #[serde(skip)]
    pub owner: UserId,
    pub lines: Vec<CartLine>,
}

impl Cart {
    pub fn empty(id: CartId, owner: UserId) -> Self {
        Cart {
            id,
            owner,
            lines: Vec::new(),
        }
    }

    /// Adds `quantity` of `sku`: to its line if there is one (the total must stay within
    /// [`MAX_QUANTITY`]), else as a new line.
    pub fn add(&mut self, sku: Sku, quantity: Quantity) -> Result<(), CartError> {
        if let Some(line) = self.lines.iter_mut().find(|l| l.sku == sku) {
            line.quantity = Quantity::new(line.quantity.get() + quantity.get())?;
            return Ok(());
        }
        if self.lines.len() >= MAX_LINES {
            return Err(CartError::TooManyLines);
        }
        self.lines.push(CartLine { sku, quantity });
        Ok(())
    }

    pub fn set_quantity(&mut self, sku: &Sku, quantity: Quantity) -> Result<(), CartError> {
        let line = self
            .lines
            .iter_mut()
            .find(|l| l.sku == *sku)
            .ok_or(CartError::NotInCart)?;
        line.quantity = quantity;
        Ok(())
    }

    pub fn remove(&mut self, sku: &Sku) -> Result<(), CartError> {
        let before = self.lines.len();
        self.lines.retain(|l| l.sku != *sku);
        if self.lines.len() == before {
            Err(CartError::NotInCart)
        } else {
            Ok(())
        }
    }

    pub fn clear(&mut self) {
        self.lines.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).expect("valid sku")
    }

    fn qty(n: u32) -> Quantity {
        Quantity::new(n).expect("valid quantity")
    }

    #[test]
    fn values_are_checked_at_the_edge() {
        assert!(Sku::parse("TEA-001").is_ok());
        for bad in [
            "",
            "tea-001",
            "TEA 001",
            "TEA;DROP",
            &"A".repeat(33),
            "<script>",
        ] {
            assert_eq!(Sku::parse(bad), Err(CartError::InvalidSku), "{bad:?}");
        }
        assert_eq!(Quantity::new(0), Err(CartError::InvalidQuantity));
        assert_eq!(Quantity::new(100), Err(CartError::InvalidQuantity));
    }

    #[test]
    fn adding_merges_lines_within_the_limits() {
        let mut cart = Cart::empty(CartId(uuid::Uuid::nil()), UserId(uuid::Uuid::nil()));
        cart.add(sku("TEA-001"), qty(2)).expect("add");
        cart.add(sku("TEA-001"), qty(3)).expect("add again");
        assert_eq!(cart.lines.len(), 1);
        assert_eq!(cart.lines[0].quantity.get(), 5);
        assert_eq!(
            cart.add(sku("TEA-001"), qty(95)),
            Err(CartError::InvalidQuantity)
        );
        assert_eq!(
            cart.lines[0].quantity.get(),
            5,
            "a refused add changes nothing"
        );
        cart.set_quantity(&sku("TEA-001"), qty(9)).expect("set");
        assert_eq!(cart.lines[0].quantity.get(), 9);
        assert_eq!(cart.remove(&sku("CUP-002")), Err(CartError::NotInCart));
        cart.remove(&sku("TEA-001")).expect("remove");
        assert!(cart.lines.is_empty());
        for i in 0..MAX_LINES {
            cart.add(sku(&format!("P-{i}")), qty(1)).expect("room");
        }
        assert_eq!(
            cart.add(sku("ONE-MORE"), qty(1)),
            Err(CartError::TooManyLines)
        );
        cart.clear();
        assert!(cart.lines.is_empty());
    }

    proptest! {
        /// Whatever sequence of operations, the cart's invariants hold.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u8..4, 0usize..60, 0u32..120), 0..200)) {
            let mut cart = Cart::empty(CartId(uuid::Uuid::nil()), UserId(uuid::Uuid::nil()));
            for (op, product, n) in ops {
                let sku = sku(&format!("P-{product}"));
                let _ = match (op, Quantity::new(n)) {
                    (0, Ok(q)) => cart.add(sku, q),
                    (1, Ok(q)) => cart.set_quantity(&sku, q),
                    (2, _) => cart.remove(&sku),
                    _ => Ok(()),
                };
                prop_assert!(cart.lines.len() <= MAX_LINES);
                let mut skus: Vec<&Sku> = cart.lines.iter().map(|l| &l.sku).collect();
                skus.sort();
                skus.dedup();
                prop_assert_eq!(skus.len(), cart.lines.len(), "one line per product");
                prop_assert!(cart.lines.iter().all(|l| (1..=MAX_QUANTITY).contains(&l.quantity.get())));
            }
        }
    }
}
