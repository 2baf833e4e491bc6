//! The checkout saga as a pure state machine: an order's state, what may happen to it, and where
//! that leads. The driver ([`super::driver`]) persists every transition (with its audit row) and
//! performs the step each unfinished state calls for; the reconciler resumes any of them after a
//! crash. Anything not listed in [`next`] changes nothing: duplicate, late and out-of-order
//! webhooks are absorbed here.
//!
//! ```text
//!  created ──payment created──▶ awaiting_payment ──succeeded──▶ confirming ──hold sold──▶ paid
//!     │                            │  failed / deadline / buyer          │                  │ cancel (buyer,
//!     │ hold gone                  ▼                                     │ hold lost        ▼  organizer)
//!     └──────────▶ cancelled ◀──released── releasing                     └────────▶ refunding ──refunded──▶ refunded
//!                     │   (late success: back to confirming)
//! ```

use serde::{Deserialize, Serialize};

/// Where an order is (stored as `orders.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderState {
    /// Recorded; the hold is to be extended (unless the edge did as it forwarded the checkout) and
    /// the payment created.
    Created,
    /// The buyer is paying; the deadline is the extended hold's expiry.
    AwaitingPayment,
    /// Paid at the provider; the hold is to be sold at the edge.
    Confirming,
    /// Sold: tickets issued.
    Paid,
    /// No payment will come (failed, abandoned, cancelled): the hold is to be released.
    Releasing,
    /// Ended without money kept.
    Cancelled,
    /// Money to give back (hold lost, buyer or organizer cancellation).
    Refunding,
    /// Money given back.
    Refunded,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Confirming => "confirming",
            Self::Paid => "paid",
            Self::Releasing => "releasing",
            Self::Cancelled => "cancelled",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }

    /// States the driver still has work in.
    pub fn unfinished(self) -> bool {
        matches!(
            self,
            Self::Created | Self::AwaitingPayment | Self::Confirming | Self::Releasing | Self::Refunding
        )
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The hold was extended and the payment created.
    PaymentCreated,
    /// The hold was gone before any payment existed.
    HoldGone,
    /// The provider says the money was taken (webhook or query).
    PaymentSucceeded,
    /// The provider says this payment failed or was cancelled.
    PaymentFailed,
    /// The provider refused to create the payment (nothing can be paid).
    PaymentRefused,
    /// The payment deadline passed with no outcome; the payment was cancelled at the provider.
    DeadlinePassed,
    /// The edge sold the hold (confirmed, or reclaimed after expiry).
    HoldSold,
    /// The hold expired and its seats went to someone else.
    HoldLost,
    /// The edge released the hold (or it had already ended).
    HoldReleased,
    /// The buyer cancels.
    BuyerCancels,
    /// The organizer cancels the event.
    EventCancelled,
    /// The organizer refunds one paid order.
    OrganizerRefunds,
    /// The refund went through (and the seats were handled).
    Refunded,
}

/// Why an order ended as it did (stored as `orders.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    HoldExpired,
    PaymentFailed,
    Abandoned,
    HoldLost,
    BuyerCancelled,
    EventCancelled,
    OrganizerRefunded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HoldExpired => "hold_expired",
            Self::PaymentFailed => "payment_failed",
            Self::Abandoned => "abandoned",
            Self::HoldLost => "hold_lost",
            Self::BuyerCancelled => "buyer_cancelled",
            Self::EventCancelled => "event_cancelled",
            Self::OrganizerRefunded => "organizer_refunded",
        }
    }
}

/// A transition: the new state and, when it decides one, the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: OrderState,
    pub outcome: Option<Outcome>,
}

fn to(state: OrderState, outcome: Option<Outcome>) -> Option<Transition> {
    Some(Transition { to: state, outcome })
}

/// Where `input` leads from `state`; `None`: it changes nothing.
pub fn next(state: OrderState, input: Input) -> Option<Transition> {
    use Input::*;
    use OrderState::*;
    match (state, input) {
        (Created, PaymentCreated) => to(AwaitingPayment, None),
        (Created, HoldGone) => to(Cancelled, Some(Outcome::HoldExpired)),
        (Created, BuyerCancels) => to(Releasing, Some(Outcome::BuyerCancelled)),
        (Created, EventCancelled) => to(Releasing, Some(Outcome::EventCancelled)),
        // The provider refused to create the payment (an amount under its minimum, say): no money
        // can be taken, the buyer hears at once rather than when the hold runs out.
        (Created, PaymentRefused) => to(Releasing, Some(Outcome::PaymentFailed)),
        // Money taken: it must end in tickets or a refund, whatever happened before (a late or
        // out-of-order success after a failure, a deadline or a cancellation).
        (Created | AwaitingPayment | Releasing | Cancelled, PaymentSucceeded) => to(Confirming, None),
        (AwaitingPayment, PaymentFailed) => to(Releasing, Some(Outcome::PaymentFailed)),
        (AwaitingPayment, DeadlinePassed) => to(Releasing, Some(Outcome::Abandoned)),
        (AwaitingPayment, BuyerCancels) => to(Releasing, Some(Outcome::BuyerCancelled)),
        (AwaitingPayment, EventCancelled) => to(Releasing, Some(Outcome::EventCancelled)),
        (Confirming, HoldSold) => to(Paid, None),
        (Confirming, HoldLost) => to(Refunding, Some(Outcome::HoldLost)),
        (Releasing, HoldReleased) => to(Cancelled, None),
        (Paid, BuyerCancels) => to(Refunding, Some(Outcome::BuyerCancelled)),
        (Paid, EventCancelled) => to(Refunding, Some(Outcome::EventCancelled)),
        (Paid, OrganizerRefunds) => to(Refunding, Some(Outcome::OrganizerRefunded)),
        (Refunding, Input::Refunded) => to(OrderState::Refunded, None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The saga against a model of the world (the provider, the edge's hold, webhook deliveries),
    //! driven by random orderings: whatever happens, every order ends paid with its hold sold, or
    //! refunded, or cancelled with no money kept; no refund twice; no hold sold to a cancelled order.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Pay {
        None,
        Pending,
        Succeeded,
        Failed,
        Canceled,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Hold {
        Held,
        Expired,
        Released,
        Sold,
        /// Ended, and its seats held or sold by another buyer.
        Taken,
        Returned,
    }

    #[derive(Debug, Clone)]
    struct World {
        state: OrderState,
        pay: Pay,
        hold: Hold,
        deadline_passed: bool,
        refunds: u32,
        /// Webhooks in flight (may be delivered in any order, more than once).
        inbox: Vec<Input>,
        /// The provider refuses to create payments.
        refuse: bool,
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// The buyer pays or is declined at the provider.
        Approve,
        Decline,
        /// One webhook in flight is delivered (index), and may stay for a duplicate.
        Deliver(usize, bool),
        /// Time passes beyond the hold's expiry (and the payment deadline).
        Expire,
        /// Another buyer takes the seats of an ended hold.
        Compete,
        /// The driver (or the reconciler after a crash) performs the current state's step.
        Step,
        BuyerCancels,
        EventCancelled,
        /// The provider will refuse to create the payment.
        Refuse,
    }

    fn apply(w: &mut World, input: Input) {
        if let Some(t) = next(w.state, input) {
            w.state = t.to;
        }
    }

    /// The driver's step for the current state, against the world (mirrors `payment_steps.rs` and `seat_steps.rs`).
    fn step(w: &mut World) {
        match w.state {
            OrderState::Created => {
                if w.hold == Hold::Held && w.refuse {
                    // No payment exists: the hold is released by the `releasing` step.
                    apply(w, Input::PaymentRefused);
                } else if w.hold == Hold::Held {
                    w.pay = Pay::Pending;
                    apply(w, Input::PaymentCreated);
                } else {
                    apply(w, Input::HoldGone);
                }
            }
            OrderState::AwaitingPayment => {
                if w.deadline_passed {
                    // Cancel at the provider; it tells us if it was too late.
                    match w.pay {
                        Pay::Succeeded => apply(w, Input::PaymentSucceeded),
                        Pay::Failed => apply(w, Input::PaymentFailed),
                        _ => {
                            w.pay = Pay::Canceled;
                            apply(w, Input::DeadlinePassed);
                        }
                    }
                }
            }
            OrderState::Confirming => match w.hold {
                Hold::Held | Hold::Sold => {
                    w.hold = Hold::Sold;
                    apply(w, Input::HoldSold);
                }
                // Reclaim: the seats are still free.
                Hold::Expired | Hold::Released => {
                    w.hold = Hold::Sold;
                    apply(w, Input::HoldSold);
                }
                Hold::Taken | Hold::Returned => apply(w, Input::HoldLost),
            },
            OrderState::Releasing => {
                if w.pay == Pay::Pending {
                    w.pay = Pay::Canceled;
                }
                if w.pay == Pay::Succeeded {
                    apply(w, Input::PaymentSucceeded);
                    return;
                }
                if w.hold == Hold::Held {
                    w.hold = Hold::Released;
                }
                apply(w, Input::HoldReleased);
            }
            OrderState::Refunding => {
                assert_eq!(w.pay, Pay::Succeeded, "refunding what was never paid");
                w.refunds += 1;
                if w.hold == Hold::Sold {
                    w.hold = Hold::Returned;
                }
                apply(w, Input::Refunded);
            }
            OrderState::Paid | OrderState::Cancelled | OrderState::Refunded => {}
        }
    }

    fn run(w: &mut World, op: Op) {
        match op {
            Op::Approve if w.pay == Pay::Pending => {
                w.pay = Pay::Succeeded;
                w.inbox.push(Input::PaymentSucceeded);
            }
            Op::Decline if w.pay == Pay::Pending => {
                w.pay = Pay::Failed;
                w.inbox.push(Input::PaymentFailed);
            }
            Op::Deliver(i, keep) if !w.inbox.is_empty() => {
                let i = i % w.inbox.len();
                let input = if keep { w.inbox[i] } else { w.inbox.remove(i) };
                apply(w, input);
            }
            Op::Expire => {
                w.deadline_passed = true;
                if w.hold == Hold::Held {
                    w.hold = Hold::Expired;
                }
            }
            Op::Compete if matches!(w.hold, Hold::Expired | Hold::Released) => w.hold = Hold::Taken,
            Op::Step => step(w),
            Op::BuyerCancels => apply(w, Input::BuyerCancels),
            Op::EventCancelled => apply(w, Input::EventCancelled),
            Op::Refuse => w.refuse = true,
            _ => {}
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Approve),
            1 => Just(Op::Decline),
            3 => (0usize..8, any::<bool>()).prop_map(|(i, k)| Op::Deliver(i, k)),
            1 => Just(Op::Expire),
            1 => Just(Op::Compete),
            4 => Just(Op::Step),
            1 => Just(Op::BuyerCancels),
            1 => Just(Op::EventCancelled),
            1 => Just(Op::Refuse),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_order_ends_with_tickets_or_its_money_back(ops in proptest::collection::vec(op(), 0..40)) {
            let mut w = World {
                state: OrderState::Created, pay: Pay::None, hold: Hold::Held,
                deadline_passed: false, refunds: 0, inbox: Vec::new(), refuse: false,
            };
            for op in ops {
                run(&mut w, op);
                // At every moment: a sold hold belongs to an order that is paid (or being refunded).
                if w.hold == Hold::Sold {
                    prop_assert!(matches!(w.state, OrderState::Paid | OrderState::Refunding | OrderState::Confirming), "{:?}", w);
                }
            }
            // Then the world settles: time passes, every webhook arrives, the reconciler runs.
            run(&mut w, Op::Expire);
            for _ in 0..20 {
                while let Some(input) = w.inbox.pop() { apply(&mut w, input); }
                step(&mut w);
            }
            prop_assert!(!w.state.unfinished(), "stuck in {:?}", w.state);
            prop_assert!(w.refunds <= 1, "refunded twice");
            match w.state {
                OrderState::Paid => prop_assert!(w.pay == Pay::Succeeded && w.hold == Hold::Sold, "{:?}", w),
                OrderState::Refunded => prop_assert!(w.pay == Pay::Succeeded && w.refunds == 1 && w.hold != Hold::Sold, "{:?}", w),
                OrderState::Cancelled => prop_assert!(w.pay != Pay::Succeeded && w.hold != Hold::Sold && w.refunds == 0, "{:?}", w),
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn a_payment_the_provider_refuses_to_create_ends_the_order_at_once() {
        assert_eq!(
            next(OrderState::Created, Input::PaymentRefused),
            to(OrderState::Releasing, Some(Outcome::PaymentFailed))
        );
        // Only the payment step says so: a provider's failure report needs a payment to exist.
        assert_eq!(next(OrderState::Created, Input::PaymentFailed), None);
        assert_eq!(next(OrderState::AwaitingPayment, Input::PaymentRefused), None);
    }

    #[test]
    fn duplicates_and_stale_events_change_nothing() {
        assert_eq!(next(OrderState::Paid, Input::PaymentSucceeded), None);
        assert_eq!(next(OrderState::Confirming, Input::PaymentFailed), None);
        assert_eq!(next(OrderState::Refunded, Input::PaymentSucceeded), None);
        assert_eq!(next(OrderState::Cancelled, Input::PaymentFailed), None);
        assert_eq!(
            next(OrderState::Cancelled, Input::PaymentSucceeded).map(|t| t.to),
            Some(OrderState::Confirming)
        );
    }
}
