//! Ids of exchanges the peer opens (docs/protocol.md §14.1), and failing everything in flight
//! when the connection ends.

use super::*;

impl<C: Caller> Connection<C> {
    /// Checks the id of an exchange the peer opens (docs/protocol.md §14).
    pub(crate) fn check_peer_id(&mut self, id: u32) -> Result<(), ConnError> {
        let err = |counter, message: String| {
            Err(ConnError {
                counter,
                status: StatusCode::Internal,
                message,
            })
        };
        if id == 0 {
            return err("zero_id", "id 0 on a frame that opens an exchange".into());
        }
        // The initiator (the side that sent Hello: our peer if we are the server) uses odd ids.
        let peer_is_initiator = self.role == Role::Server;
        if (id % 2 == 1) != peer_is_initiator {
            return err(
                "wrong_id_parity",
                format!(
                    "id {id} has the parity of this side's own ids (the connection's initiator \
                     opens odd ids, the acceptor even ids)"
                ),
            );
        }
        if self.inflight.contains(&id) || self.has_stream(id) || self.has_served(id) {
            return err(
                "duplicate_id",
                format!(
                    "id {id} is already in use by a call, stream or subscription that has not ended"
                ),
            );
        }
        if self.last_peer_id == 0 || super::client::serial_after(id, self.last_peer_id) {
            self.last_peer_id = id;
        }
        Ok(())
    }

    /// Fails every call and stream in flight with `status` (the connection ended).
    pub(crate) fn fail_all(&mut self, status: &crate::Status) {
        self.calls.fail_all(status);
        self.fail_streams(status);
        self.fail_events(status);
    }
}
