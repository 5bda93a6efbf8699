//! STS: `GetCallerIdentity`, answered from the verified key.

use trailwatch_protocol::Value;

use super::{CallContext, Outcome};

pub(super) fn get_caller_identity(cx: &CallContext<'_>) -> Outcome {
    let p = cx.principal;
    Outcome::read(Value::structure([
        ("UserId", Value::string(p.principal_id.clone())),
        ("Account", Value::string(p.account_id.clone())),
        ("Arn", Value::string(p.arn.clone())),
    ]))
}
