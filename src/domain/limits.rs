//! Bounds on every input, GameLift's where it has one.

/// Custom game session ids: 1-48 characters of `[a-zA-Z0-9-]` (GameLift).
pub const GAME_SESSION_ID_MAX: usize = 48;
/// Player ids: 1-1024 characters (GameLift).
pub const PLAYER_ID_MAX: usize = 1024;
/// Player data: at most 2048 characters (GameLift).
pub const PLAYER_DATA_MAX: usize = 2048;
/// Fleet ids: 1-128 characters of `[a-zA-Z0-9._:/-]`.
pub const FLEET_ID_MAX: usize = 128;
/// Idempotency keys: 1-128 characters.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
/// Seats per game session.
pub const MAX_PLAYERS_PER_GAME_SESSION: u32 = 1000;
/// Player ids per CreatePlayerSessions call (GameLift).
pub const MAX_BATCH_PLAYERS: usize = 25;
/// Page size bounds of DescribePlayerSessions (the GameLift server SDK caps a page at 1024).
pub const DESCRIBE_LIMIT_MAX: u32 = 1024;
pub const DESCRIBE_LIMIT_DEFAULT: u32 = 50;
/// Labels per game session and their sizes.
pub const LABELS_MAX: usize = 64;
pub const LABEL_KEY_MAX: usize = 128;
pub const LABEL_VALUE_MAX: usize = 256;
/// Free-text fields of a game session.
pub const NAME_MAX: usize = 1024;
pub const IP_ADDRESS_MAX: usize = 253;
/// Sentry's limits for release and environment names.
pub const RELEASE_MAX: usize = 200;
pub const ENVIRONMENT_MAX: usize = 64;
pub const REASON_MAX: usize = 1024;
/// Reservation and heartbeat timeouts: at most a day.
pub const TIMEOUT_SECONDS_MAX: u32 = 86_400;
/// Page size bounds of SearchGameSessions (GameLift's default page is 20).
pub const SEARCH_LIMIT_MAX: u32 = 100;
pub const SEARCH_LIMIT_DEFAULT: u32 = 20;
/// Players per PlacePlayerSessions call.
pub const MAX_PLACEMENT_PLAYERS: usize = 100;
/// Label selector pairs per request.
pub const SELECTOR_MAX: usize = 64;
/// Fleet ids per DescribeFleetUtilization call.
pub const UTILIZATION_FLEETS_MAX: usize = 100;
