//! One module per API message pair. Each module's doc comment gives its byte layout.
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod group_heartbeat;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;

pub use api_versions::*;
pub use create_partitions::*;
pub use create_topics::*;
pub use delete_topics::*;
pub use fetch::*;
pub use find_coordinator::*;
pub use group_heartbeat::*;
pub use groups::*;
pub use list_offsets::*;
pub use metadata::*;
pub use offset_commit::*;
pub use offset_fetch::*;
pub use produce::*;
