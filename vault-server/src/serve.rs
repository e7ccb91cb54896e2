//! The one handler pipeline. Every unary RPC goes through [`serve`] (or [`serve_returning`]
//! for the four whose answer carries a one-time credential): record the target, authenticate
//! (unless the RPC table says the request carries its own credential), parse, write the intent
//! record if the table says the RPC changes state, run the vault-core step on the blocking
//! pool, and map its error to a status. A handler keeps only its parse and its mapping of the
//! answer; whether a mutation writes its intent is decided by the table, not remembered.

use std::sync::Arc;

use tonic::{Request, Status};
use vault_core::{Error, Vault, vault::Caller};

use crate::{
    call::{Call, presented_token},
    rpcs::{self, Access, Kind},
    status::internal,
};

/// What a handler's vault-core step works with.
pub(crate) struct Step<'a> {
    pub vault: &'a Vault,
    pub call: &'a Call,
    caller: Option<&'a Caller>,
}

impl Step<'_> {
    /// The authenticated caller. Only RPCs the table marks as needing no token have none, and
    /// their steps do not ask.
    pub fn caller(&self) -> Result<&Caller, Error> {
        self.caller.ok_or(Error::Unauthenticated)
    }
}

/// Where a request's call is recorded: the tenant and path it names (raw, before parsing).
pub(crate) type Target<Req> = fn(&Req) -> Recorded<'_>;

/// What a call is recorded under: a tenant, and a path that may be a fixed prefix and a name
/// from the request (`keys/<name>`, `approle/<name>`), joined only when recorded.
pub(crate) struct Recorded<'a> {
    tenant: &'a str,
    prefix: &'static str,
    path: &'a str,
}

impl Recorded<'_> {
    pub(crate) fn record(&self, call: &Call) {
        if self.prefix.is_empty() {
            call.target(self.tenant, self.path);
        } else {
            call.target(self.tenant, &format!("{}{}", self.prefix, self.path));
        }
    }
}

/// A tenant and a path.
pub(crate) fn at<'a>(tenant: &'a str, path: &'a str) -> Recorded<'a> {
    under(tenant, "", path)
}

/// A tenant and a path made of a fixed prefix and a name (`under(t, "keys/", name)`).
pub(crate) fn under<'a>(tenant: &'a str, prefix: &'static str, name: &'a str) -> Recorded<'a> {
    Recorded {
        tenant,
        prefix,
        path: name,
    }
}

/// No tenant and no path.
pub(crate) fn nothing<Req>(_: &Req) -> Recorded<'_> {
    at("", "")
}

/// Runs a read or a mutation (see the module documentation).
pub(crate) async fn serve<Req, P, Out>(
    vault: &Arc<Vault>,
    request: Request<Req>,
    target: Target<Req>,
    parse: impl FnOnce(Req) -> Result<P, Error> + Send + 'static,
    act: impl FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
) -> Result<Out, Status>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    run(vault, request, target, parse, Extra::none(), act).await
}

/// [`serve`] for a mutation whose audit records say something about the parsed request
/// (`note`, e.g. the recipients of new shares): the note is made after authentication and
/// parsing, before the intent record, so the intent carries it.
pub(crate) async fn serve_noted<Req, P, Out>(
    vault: &Arc<Vault>,
    request: Request<Req>,
    target: Target<Req>,
    parse: impl FnOnce(Req) -> Result<P, Error> + Send + 'static,
    note: fn(&P) -> String,
    act: impl FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
) -> Result<Out, Status>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    let extra = Extra {
        note: Some(note),
        ..Extra::none()
    };
    run(vault, request, target, parse, extra, act).await
}

/// Runs a mutation whose answer may carry a one-time credential: its intent names what the
/// answer returns (`returns`, never the value), and once the step succeeded with an answer
/// that `carries` one, the answer is no longer withheld for the outcome record.
pub(crate) async fn serve_returning<Req, P, Out>(
    vault: &Arc<Vault>,
    request: Request<Req>,
    target: Target<Req>,
    parse: impl FnOnce(Req) -> Result<P, Error> + Send + 'static,
    returns: fn(&P) -> String,
    carries: fn(&Out) -> bool,
    act: impl FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
) -> Result<Out, Status>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    let extra = Extra {
        returns: Some(returns),
        carries: Some(carries),
        ..Extra::none()
    };
    run(vault, request, target, parse, extra, act).await
}

/// What a handler adds to the pipeline: a note for the intent record, and for a call whose
/// answer carries a credential, what the intent names and whether an answer carries it.
struct Extra<P, Out> {
    note: Option<fn(&P) -> String>,
    returns: Option<fn(&P) -> String>,
    carries: Option<fn(&Out) -> bool>,
}

impl<P, Out> Extra<P, Out> {
    fn none() -> Self {
        Extra {
            note: None,
            returns: None,
            carries: None,
        }
    }
}

async fn run<Req, P, Out>(
    vault: &Arc<Vault>,
    request: Request<Req>,
    target: Target<Req>,
    parse: impl FnOnce(Req) -> Result<P, Error> + Send + 'static,
    extra: Extra<P, Out>,
    act: impl FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
) -> Result<Out, Status>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    let call = Call::of(&request);
    let Some(rpc) = rpcs::of_path(call.method()) else {
        tracing::error!(method = %call.method(), "a handler without a row in the RPC table");
        return Err(internal());
    };
    // The table and the handler must agree on whether the answer carries a credential.
    if (rpc.kind == Kind::CredentialMutation) != extra.returns.is_some() {
        tracing::error!(method = %call.method(), "the handler and the RPC table disagree on the call's kind");
        return Err(internal());
    }
    let presented = (rpc.access != Access::NoToken).then(|| presented_token(&request));
    let message = request.into_inner();
    target(&message).record(&call);
    let vault = Arc::clone(vault);
    let kind = rpc.kind;
    let Extra {
        note,
        returns,
        carries,
    } = extra;
    let out = call
        .blocking(move |call| {
            let caller = presented
                .map(|presented| call.authenticate(&vault, presented))
                .transpose()?;
            let parsed = parse(message)?;
            if let Some(note) = note {
                call.note(note(&parsed));
            }
            match (kind, returns) {
                (Kind::Read, _) => {}
                (Kind::Mutation, _) => call.intent()?,
                (Kind::CredentialMutation, Some(returns)) => {
                    call.intent_to_return(&returns(&parsed))?
                }
                // Refused above: the kinds agree.
                (Kind::CredentialMutation, None) => return Err(Error::AuditUnavailable),
            }
            act(
                Step {
                    vault: &vault,
                    call,
                    caller: caller.as_ref(),
                },
                parsed,
            )
        })
        .await?;
    if carries.is_some_and(|carries| carries(&out)) {
        call.answer_carries_credential();
    }
    Ok(out)
}
