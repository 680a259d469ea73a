//! The subscription messages as the [`ClientActor`] takes them: each is handed to the
//! subscription actor, whose answer is the caller's.

use actix::prelude::*;

use super::actor::{GetSubscriptionStats, SubscriptionStats, SyncBookmarks};
use super::errors::{CancelError, PingError, QueryError, SubscribeError};
use super::messages::{
    CancelAllSubscriptions, CancelSubscription, DiscardBookmarks, Ping, PingReply, SowAndSubscribe,
    SowCollect, SowQuery, Subscribe,
};
use super::Delivery;
use crate::client::ClientActor;

/// Forwards `$msg` to the subscription actor; a stopped one answers `$stopped`.
macro_rules! forward {
    ($msg:ty, $out:ty, $stopped:expr) => {
        impl Handler<$msg> for ClientActor {
            type Result = ResponseFuture<$out>;

            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) -> Self::Result {
                let req = self.subscriptions.send(msg);
                Box::pin(async move { req.await.unwrap_or($stopped) })
            }
        }
    };
}

forward!(
    Subscribe,
    Result<String, SubscribeError>,
    Err(SubscribeError::Stopped)
);
forward!(
    SowAndSubscribe,
    Result<String, SubscribeError>,
    Err(SubscribeError::Stopped)
);
forward!(SowQuery, Result<String, QueryError>, Err(QueryError::Stopped));
forward!(
    SowCollect,
    Result<Vec<Delivery>, QueryError>,
    Err(QueryError::Stopped)
);
forward!(
    CancelSubscription,
    Result<(), CancelError>,
    Err(CancelError::Stopped)
);
forward!(CancelAllSubscriptions, usize, 0);
forward!(DiscardBookmarks, (), ());
forward!(Ping, Result<PingReply, PingError>, Err(PingError::Stopped));
forward!(SyncBookmarks, bool, false);
forward!(
    GetSubscriptionStats,
    SubscriptionStats,
    SubscriptionStats::default()
);
