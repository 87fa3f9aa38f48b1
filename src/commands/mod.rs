//! One module per subcommand. Each exposes a plain options struct and a function that runs it;
//! none of them parses the command line.

pub mod cid;
pub mod create_channel_release;
pub mod create_nixipfs;
pub mod garbage_collect;
pub mod release_nixos;
pub mod status;
pub mod update_binary_cache;
pub mod verify;
