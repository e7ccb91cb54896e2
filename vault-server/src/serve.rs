//! The one handler pipeline. Every unary RPC goes through [`Handlers::rpc`]: a handler names
//! what the call is recorded under, how its request is parsed, the vault-core step and the
//! mapping of the answer (`self.rpc(r).target(..).parse(..).run(..).answer(..)`), and the
//! pipeline does the rest in one order: record the target, authenticate
//! (unless the RPC table says the request carries its own credential), parse, write the intent
//! record if the table says the RPC changes state, run the vault-core step on the blocking
//! pool, and map its error to a status. A handler keeps only its parse and its mapping of the
//! answer; whether a mutation writes its intent is decided by the table, not remembered.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{Error, Vault, vault::Caller};

use crate::{
    Shared,
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

/// What every handler of the services returns.
pub(crate) type Reply<T> = Result<Response<T>, Status>;

/// The one value behind every gRPC service: each `impl <Service> for Handlers` lives in the
/// service's module, and [`Handlers::rpc`] starts each unary call down the pipeline.
#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) shared: Arc<Shared>,
}

impl Handlers {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Handlers { shared }
    }

    /// A unary call, recorded under no tenant and no path and parsed to `()` until the
    /// handler says otherwise with [`Rpc::target`] and [`Rpc::parse`].
    pub(crate) fn rpc<Req: Send + 'static>(&self, request: Request<Req>) -> Rpc<Req, ()> {
        Rpc {
            vault: Arc::clone(&self.shared.vault),
            request,
            target: nothing,
            parse: Box::new(|_| Ok(())),
        }
    }
}

/// A call on its way down the pipeline: what it is recorded under and how it is parsed.
pub(crate) struct Rpc<Req, P> {
    vault: Arc<Vault>,
    request: Request<Req>,
    target: Target<Req>,
    parse: Box<dyn Fn(Req) -> Result<P, Error> + Send + Sync>,
}

impl<Req: Send + 'static, P: Send + 'static> Rpc<Req, P> {
    /// What the call is recorded under (read off the raw request, before parsing).
    pub(crate) fn target(mut self, target: Target<Req>) -> Self {
        self.target = target;
        self
    }

    /// How the request becomes what the step works with; runs after authentication.
    pub(crate) fn parse<Q: Send + 'static>(
        self,
        parse: impl Fn(Req) -> Result<Q, Error> + Send + Sync + 'static,
    ) -> Rpc<Req, Q> {
        Rpc {
            vault: self.vault,
            request: self.request,
            target: self.target,
            parse: Box::new(parse),
        }
    }

    /// The vault-core step, run on the blocking pool after the intent record.
    pub(crate) fn run<Out, A>(self, act: A) -> Running<Req, P, Out, A>
    where
        A: FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
    {
        Running {
            rpc: self,
            extra: Extra {
                note: None,
                returns: None,
                carries: None,
            },
            act,
        }
    }
}

impl<Req: Send + 'static, P: Send + 'static> Rpc<Req, P> {
    /// [`Rpc::run`] for a step that may run twice ([`Running::answer_now`]).
    pub(crate) fn run_now<Out, A>(self, act: A) -> Running<Req, P, Out, A>
    where
        A: Fn(Step<'_>, P) -> Result<Out, Error> + Send + Sync + 'static,
    {
        self.run(act)
    }
}

/// A call with its step: what is left is what the audit records add and the answer.
pub(crate) struct Running<Req, P, Out, A> {
    rpc: Rpc<Req, P>,
    extra: Extra<P, Out>,
    act: A,
}

impl<Req, P, Out, A> Running<Req, P, Out, A>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
    A: FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
{
    /// For a mutation whose audit records say something about the parsed request (e.g. the
    /// recipients of new shares): the note is made after authentication and parsing, before
    /// the intent record, so the intent carries it.
    pub(crate) fn noted(mut self, note: fn(&P) -> String) -> Self {
        self.extra.note = Some(note);
        self
    }

    /// For a mutation whose answer may carry a one-time credential: its intent names what the
    /// answer returns (`returns`, never the value), and once the step succeeded with an answer
    /// that `carries` one, the answer is no longer withheld for the outcome record.
    pub(crate) fn returning(
        mut self,
        returns: fn(&P) -> String,
        carries: fn(&Out) -> bool,
    ) -> Self {
        self.extra.returns = Some(returns);
        self.extra.carries = Some(carries);
        self
    }

    /// Runs the call (see the module documentation) and gives the step's answer.
    pub(crate) async fn out(self) -> Result<Out, Status> {
        let Running { rpc, extra, act } = self;
        run(rpc, extra, act).await
    }

    /// Runs the call and maps the step's answer to the response message.
    pub(crate) async fn answer<Resp>(self, respond: impl FnOnce(Out) -> Resp) -> Reply<Resp> {
        Ok(Response::new(respond(self.out().await?)))
    }
}

impl<Req, P, Out, A> Running<Req, P, Out, A>
where
    Req: Clone + Send + Sync + 'static,
    P: Send + 'static,
    Out: Send + 'static,
    A: Fn(Step<'_>, P) -> Result<Out, Error> + Send + Sync + 'static,
{
    /// [`Running::answer`] for a read whose step usually needs nothing slow: it is tried on the
    /// async worker first and runs on the blocking pool only if it would wait
    /// ([`Call::now_or_blocking`]). Authentication and parsing may then run twice; what must
    /// happen once (the tenant's rate-limit token) happens once.
    pub(crate) async fn answer_now<Resp>(self, respond: impl FnOnce(Out) -> Resp) -> Reply<Resp> {
        let Running { rpc, extra, act } = self;
        Ok(Response::new(respond(run_now(rpc, extra, act).await?)))
    }
}

/// [`run`] for [`Running::answer_now`].
async fn run_now<Req, P, Out>(
    rpc: Rpc<Req, P>,
    extra: Extra<P, Out>,
    act: impl Fn(Step<'_>, P) -> Result<Out, Error> + Send + Sync + 'static,
) -> Result<Out, Status>
where
    Req: Clone + Send + Sync + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    let call = Call::of(&rpc.request);
    let row = rpcs::of_path(call.method());
    let presented = presented_token(&rpc.request);
    // Only reads that take a token, and only calls that may authenticate twice (no MFA code
    // to spend): the rest take the one-run pipeline, which also refuses what does not belong
    // to the RPC table.
    let reads_with_token =
        row.is_some_and(|row| row.kind == Kind::Read && row.access != Access::NoToken);
    // A note would be made twice: such reads run once too.
    if !reads_with_token
        || extra.returns.is_some()
        || extra.note.is_some()
        || !presented.may_run_twice()
    {
        // `run` reads the token again; this copy goes now, not after the call.
        drop(presented);
        return run(rpc, extra, act).await;
    }
    let Rpc {
        vault,
        request,
        target,
        parse,
    } = rpc;
    let message = request.into_inner();
    target(&message).record(&call);
    let work = move |call: &Call| {
        let caller = call.authenticate_again(&vault, &presented)?;
        crate::call::inline::gate(&caller)?;
        let parsed = parse(message.clone())?;
        act(
            Step {
                vault: &vault,
                call,
                caller: Some(&caller),
            },
            parsed,
        )
    };
    call.now_or_blocking(Arc::new(work)).await
}

/// What a handler adds to the pipeline: a note for the intent record, and for a call whose
/// answer carries a credential, what the intent names and whether an answer carries it.
struct Extra<P, Out> {
    note: Option<fn(&P) -> String>,
    returns: Option<fn(&P) -> String>,
    carries: Option<fn(&Out) -> bool>,
}

async fn run<Req, P, Out>(
    rpc: Rpc<Req, P>,
    extra: Extra<P, Out>,
    act: impl FnOnce(Step<'_>, P) -> Result<Out, Error> + Send + 'static,
) -> Result<Out, Status>
where
    Req: Send + 'static,
    P: Send + 'static,
    Out: Send + 'static,
{
    let Rpc {
        vault,
        request,
        target,
        parse,
    } = rpc;
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
