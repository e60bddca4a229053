//! Schema-only types: what billing's handlers answer, described for the OpenAPI document.
//! The handlers build these answers with `json!()`; these structs are never constructed or
//! serialised, they only describe the same members (the router tests validate real answers
//! against the document, so a drift fails there). A member that is always sent is required
//! (`#[schema(required = true)]` when it may be `null`); one that is sometimes left out is not.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error billing answers: `{"detail": "…"}` (4xx and 5xx; internal causes are never sent).
#[derive(ToSchema)]
#[schema(as = ApiError)]
pub struct ApiErrorBody {
    /// What went wrong, for a person.
    pub detail: String,
}

/// The answer to a request that mailed a link (or would have): it reveals nothing.
#[derive(ToSchema)]
#[schema(example = json!({"detail": "Check your e-mail to continue"}))]
pub struct CheckMail {
    /// Always "Check your e-mail to continue".
    pub detail: String,
}

#[derive(ToSchema)]
pub struct Health {
    /// Always "ok".
    pub status: String,
}

/// A role in an account.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum RoleName {
    Member,
    Admin,
    Owner,
}

/// Where an account's subscription stands.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    None,
    Active,
    Cancelled,
    PastDue,
    Expired,
}

/// `POST /auth/register` with immediate keys: the new account and its first key (shown once).
#[derive(ToSchema)]
pub struct Registered {
    pub user_id: Uuid,
    pub email: String,
    pub tier: String,
    /// The account's first API key, shown once.
    pub api_key: String,
}

/// An API key as listed (never the key itself).
#[derive(ToSchema)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    #[schema(required = true)]
    pub name: Option<String>,
    /// The key's first characters, to recognise it.
    pub key_prefix: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Who created the key (null for keys from before teams).
    #[schema(required = true)]
    pub created_by_email: Option<String>,
    /// The key may only read.
    pub read_only: bool,
    /// The agent the key is bound to.
    #[schema(required = true)]
    pub agent: Option<String>,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own requests per minute (null: the account's).
    #[schema(required = true)]
    pub requests_per_minute: Option<i64>,
}

/// A key just created: as listed, plus the key itself (shown once).
#[derive(ToSchema)]
pub struct NewApiKey {
    pub id: Uuid,
    #[schema(required = true)]
    pub name: Option<String>,
    pub key_prefix: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub created_by_email: Option<String>,
    pub read_only: bool,
    #[schema(required = true)]
    pub agent: Option<String>,
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub requests_per_minute: Option<i64>,
    /// The key, shown once: billing stores only its hash.
    pub api_key: String,
}

#[derive(ToSchema)]
pub struct ApiKeyList {
    /// Active keys first, newest first.
    pub keys: Vec<ApiKeyInfo>,
}

#[derive(ToSchema)]
pub struct Revoked {
    pub id: Uuid,
    pub revoked: bool,
}

/// A rotated key's replacement (shown once).
#[derive(ToSchema)]
pub struct KeyRotated {
    pub id: Uuid,
    #[schema(required = true)]
    pub name: Option<String>,
    pub key_prefix: String,
    pub api_key: String,
    pub created_at: DateTime<Utc>,
    /// The rotated key's id.
    pub replaces: Uuid,
}

/// The account's use of its plan.
#[derive(ToSchema)]
pub struct Usage {
    pub user_id: Uuid,
    pub email: String,
    pub tier: String,
    pub memories_used: i64,
    pub memories_limit: u64,
    pub requests_per_minute: u32,
    pub keys_used: i64,
    pub keys_limit: u32,
    pub agents_used: i64,
    pub agents_limit: u32,
    pub subscription_status: SubscriptionStatus,
    /// RFC 3339.
    #[schema(required = true)]
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    #[schema(required = true)]
    pub provider: Option<String>,
}

#[derive(ToSchema)]
pub struct UsageHour {
    /// Unix seconds.
    pub hour_start: i64,
    pub requests: i64,
}

/// Without parameters: requests per hour over the last 24 hours, oldest first, zero-filled.
#[derive(ToSchema)]
pub struct UsageHours {
    pub hours: Vec<UsageHour>,
}

#[derive(ToSchema)]
pub struct UsageRow {
    /// Unix seconds.
    pub start: i64,
    /// The key id, agent or route family; `all` without grouping.
    pub group: String,
    /// `2xx`, `3xx`, `4xx`, `429` or `5xx`.
    pub status_class: String,
    pub requests: i64,
}

/// With any parameter: the usage history.
#[derive(ToSchema)]
pub struct UsageReport {
    /// Unix seconds, aligned to the granularity.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
    pub granularity: crate::usage_history::Granularity,
    #[schema(required = true)]
    pub group_by: Option<crate::usage_history::GroupBy>,
    /// Oldest first; buckets without requests are absent.
    pub rows: Vec<UsageRow>,
    pub total: i64,
}

/// `GET /auth/usage/history` in JSON: the original 24-hour shape without parameters, the
/// report with any.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum UsageHistory {
    Hours(UsageHours),
    Report(UsageReport),
}

/// What a mailed link was for.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum LinkPurpose {
    Verification,
    SignIn,
    Invitation,
}

/// An opened link: the person is signed in (the session cookie is set).
#[derive(ToSchema)]
pub struct LinkOpened {
    pub purpose: LinkPurpose,
    pub email: String,
    pub account_id: Uuid,
    pub role: RoleName,
    /// Send it as `X-CSRF-Token` with every cookie-authenticated request other than GET/HEAD.
    pub csrf_token: String,
    /// Where the page continues (e.g. a checkout), if anywhere.
    #[schema(required = true)]
    pub next: Option<String>,
    /// The account's first key (shown once), when a verification gave it one; absent otherwise.
    #[schema(nullable = false)]
    pub api_key: Option<String>,
}

/// One membership of an address.
#[derive(ToSchema)]
pub struct Membership {
    pub account_id: Uuid,
    pub owner_email: String,
    pub role: RoleName,
    pub tier: String,
}

#[derive(ToSchema)]
pub struct Session {
    pub session_id: Uuid,
    pub email: String,
    pub account_id: Uuid,
    pub role: RoleName,
    pub tier: String,
    pub csrf_token: String,
    /// Every membership of the address.
    pub accounts: Vec<Membership>,
}

#[derive(ToSchema)]
pub struct SignedOut {
    pub signed_out: bool,
}

#[derive(ToSchema)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[schema(required = true)]
    pub ip: Option<String>,
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// The session of this request.
    pub current: bool,
}

#[derive(ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

#[derive(ToSchema)]
pub struct Member {
    pub id: Uuid,
    pub email: String,
    pub role: RoleName,
    pub created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct PendingInvitation {
    pub id: Uuid,
    pub email: String,
    #[schema(required = true)]
    pub role: Option<RoleName>,
    #[schema(required = true)]
    pub invited_by: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct Members {
    pub members: Vec<Member>,
    pub invitations: Vec<PendingInvitation>,
    /// The plan's seats (members + pending invitations).
    pub max_members: u32,
}

#[derive(ToSchema)]
pub struct Invited {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: RoleName,
    pub expires_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct MemberRemoved {
    pub id: Uuid,
    pub removed: bool,
}

#[derive(ToSchema)]
pub struct InvitationCancelled {
    pub id: Uuid,
    pub cancelled: bool,
}

#[derive(ToSchema)]
pub struct AuditEvent {
    pub id: i64,
    /// An address, `key:<prefix>`, `provider:<name>` or `system`.
    pub actor: String,
    pub action: String,
    #[schema(required = true)]
    pub target: Option<String>,
    #[schema(required = true)]
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next page; null at the end.
    #[schema(required = true)]
    pub next_before: Option<i64>,
}

/// A customer's webhook endpoint (never its secret).
#[derive(ToSchema)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub secret_rotated_at: Option<DateTime<Utc>>,
}

/// An endpoint with its new secret (`whsec_` + 64 hex), shown once.
#[derive(ToSchema)]
pub struct WebhookEndpointWithSecret {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    pub secret: String,
}

#[derive(ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookEndpoint>,
    /// Every event type an endpoint may subscribe to (`"*"`: all).
    pub event_types: Vec<String>,
}

#[derive(ToSchema)]
pub struct WebhookDeleted {
    pub id: Uuid,
    pub deleted: bool,
}

#[derive(ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    #[schema(required = true)]
    pub status_code: Option<i32>,
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    #[schema(required = true)]
    pub last_status_code: Option<i32>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When a pending delivery is tried next.
    #[schema(required = true)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempt_log: Vec<DeliveryAttempt>,
}

#[derive(ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

#[derive(ToSchema)]
pub struct DeliveryResent {
    /// The new delivery.
    pub id: Uuid,
    pub resent_from: Uuid,
    pub event_id: Uuid,
    /// Always `pending`.
    pub status: String,
}

#[derive(ToSchema)]
pub struct RaisedAlert {
    /// e.g. `memory_quota:80`, `rate_limited`, `key_expiring:<key id>`, `payment_failed`.
    pub alert: String,
    pub raised_at: DateTime<Utc>,
}

/// The account's alert thresholds and the alerts whose condition still holds.
#[derive(ToSchema)]
pub struct Alerts {
    /// Percentages of the plan's memory quota, ascending; empty = off.
    pub memory_percent: Vec<u32>,
    /// 0 = off.
    pub rate_limited_minutes: u32,
    /// 0 = off.
    pub key_expiring_days: u32,
    pub payment_failed: bool,
    pub raised: Vec<RaisedAlert>,
}

/// One line of the export (NDJSON): a memory in full, and whatever else the engine's timeline
/// gives. A last line `{"error","agent","exported"}` (no `id`) marks an export cut short.
#[derive(ToSchema)]
pub struct ExportLine {
    /// Null for the default space.
    #[schema(required = true)]
    pub agent: Option<String>,
    pub id: String,
    pub content: String,
    /// 0 core, 1 inner, 2 outer, 3 belt, 4 cloud.
    pub zone: u8,
    pub importance: f64,
    /// Unix seconds.
    pub created_at: f64,
}

#[derive(ToSchema)]
pub struct AccountDeleted {
    pub deleted: bool,
    pub memories_deleted: u64,
}

#[derive(ToSchema)]
pub struct TierInfo {
    pub name: String,
    pub max_memories: u64,
    pub max_agents: u32,
    pub requests_per_minute: u32,
    pub max_api_keys: u32,
    pub max_members: u32,
    pub price_usd: u64,
    pub price_krw: u64,
}

/// Which payment providers are configured.
#[derive(ToSchema)]
pub struct ConfiguredProviders {
    pub lemonsqueezy: bool,
    pub stripe: bool,
    pub toss: bool,
}

#[derive(ToSchema)]
pub struct Tiers {
    pub tiers: Vec<TierInfo>,
    pub providers: ConfiguredProviders,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum HostedProvider {
    Lemonsqueezy,
    Stripe,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum TossProvider {
    Toss,
}

/// A Lemon Squeezy or Stripe checkout.
#[derive(ToSchema)]
pub struct HostedCheckout {
    pub provider: HostedProvider,
    /// Where to send the buyer's browser.
    pub checkout_url: String,
    /// Stripe's checkout session id (Stripe only).
    pub session_id: Option<String>,
    /// The first key of the account this checkout created (shown once); absent otherwise.
    #[schema(nullable = false)]
    pub api_key: Option<String>,
}

/// A TossPayments checkout: what billing's card page needs for `requestBillingAuth`.
#[derive(ToSchema)]
pub struct TossCheckout {
    pub provider: TossProvider,
    pub client_key: String,
    pub customer_key: String,
    /// The tier's `price_krw`.
    pub amount: u64,
    /// Always `KRW`.
    pub currency: String,
    pub order_name: String,
    pub customer_email: String,
    pub success_url: String,
    pub fail_url: String,
    pub sdk_url: String,
    /// Billing's own Toss page (`…/billing/toss/pay?tier=&email=&customerKey=`).
    pub checkout_url: String,
    /// The first key of the account this checkout created (shown once); absent otherwise.
    #[schema(nullable = false)]
    pub api_key: Option<String>,
}

#[derive(ToSchema)]
#[serde(untagged)]
pub enum Checkout {
    Hosted(HostedCheckout),
    Toss(TossCheckout),
}

/// The account's plan after a change (Toss confirmation, cancellation).
#[derive(ToSchema)]
pub struct PlanState {
    pub tier: String,
    pub subscription_status: SubscriptionStatus,
    /// RFC 3339.
    #[schema(required = true)]
    pub current_period_end: Option<String>,
}

#[derive(ToSchema)]
pub struct Cancelled {
    pub subscription_status: SubscriptionStatus,
    /// RFC 3339; the tier stays until then.
    #[schema(required = true)]
    pub current_period_end: Option<String>,
}

#[derive(ToSchema)]
pub struct Portal {
    /// The provider's customer portal (or `/dashboard#billing` for Toss).
    pub url: String,
}

/// What a provider's webhook did.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum WebhookOutcome {
    Applied,
    Recorded,
    Stale,
    NotCurrent,
    Duplicate,
    Unmapped,
    Ignored,
}

#[derive(ToSchema)]
pub struct WebhookReceived {
    pub received: bool,
    pub outcome: WebhookOutcome,
}

/// The payment providers billing knows (`lemon` is accepted for `lemonsqueezy`).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PaymentProvider {
    Lemonsqueezy,
    Stripe,
    Toss,
}
