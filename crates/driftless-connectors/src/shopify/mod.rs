//! The Shopify connector: Admin GraphQL `inventorySetQuantities` on the `available` quantity, with
//! compare-and-set through `changeFromQuantity` on every supported version (2026-01 and later: it
//! exists from 2026-01 and is required, `null` allowed, from 2026-04, when `compareQuantity` and
//! `ignoreCompareQuantity` are gone) and the `@idempotent(key:)` directive; ids are GID strings,
//! never numbers; the cost throttle in `extensions.cost.throttleStatus` is honoured before Shopify
//! has to refuse. Every request is checked against Shopify's published schemas of 2026-01, 2026-04
//! and 2026-07 by a test (`tests/shopify_schema.py`).
//!
//! Answers: top-level errors that say the request is wrong (`INVALID_VARIABLE`, `BAD_REQUEST`,
//! `ACCESS_DENIED`, ...; HTTP 200) and quantities past Shopify's 1,000,000,000 dead-letter at
//! once with Shopify's message; `IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED` is sent again with a fresh
//! key (derived, so a repeat after a lost answer reuses it); `THROTTLED`, HTTP 429 and 503 with
//! `Retry-After` are throttling.
//!
//! The channel quantity goes to one Shopify location: the first of the channel's `locations` that
//! has a `shopify_location_id` (a channel sells one pooled quantity; Shopify keeps it per location).
//!
//! [`webhook`] is the other direction: Shopify's `inventory_levels/update` webhook, verified and
//! mapped to an observation of the channel.

pub mod client;
pub mod transform;
pub mod webhook;

pub use client::ShopifyConnector;
