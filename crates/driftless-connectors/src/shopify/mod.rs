//! The Shopify connector: Admin GraphQL `inventorySetQuantities` on the `available` quantity, with
//! compare-and-set (`changeFromQuantity` from 2026-04, `compareQuantity` on 2026-01) and the
//! `@idempotent(key:)` directive; ids are GID strings, never numbers; the cost throttle in
//! `extensions.cost.throttleStatus` is honoured before Shopify has to refuse.
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
