//! The benchmarks' null baseline (`vault-bench-null`): the vault's gRPC stack with none of the
//! vault's work, so that every figure of `scripts/bench` can be given as a fraction of what
//! tonic, hyper and the kernel's loopback alone do on the same machine.
//!
//! It takes the vault's own flags (`Args`), listens the same way (the same accept loop with
//! TCP_NODELAY and per-source connection bounds, the same HTTP/2 settings) and serves
//! `vault.v1.Secrets` with `Put` and `Get` only: a put is decoded and answered with version 1,
//! a get is answered with one field named `value` of `--value-size` bytes (what `vault-cli
//! bench` writes). Nothing is stored, authenticated, sealed or audited: it is a yardstick, not a
//! vault, and it says so in every answer it cannot give (UNIMPLEMENTED).

use std::{collections::HashMap, sync::Arc};

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vault_proto::v1::{
    DeleteMetadataRequest, DeleteMetadataResponse, DeleteRequest, DeleteResponse, DestroyRequest,
    DestroyResponse, GetRequest, GetResponse, ListRequest, ListResponse, PatchRequest,
    PatchResponse, PutRequest, PutResponse, ReadMetadataRequest, ReadMetadataResponse,
    UndeleteRequest, UndeleteResponse, UpdateMetadataRequest,
    secrets_server::{Secrets, SecretsServer},
};

use crate::{Args, transport};

/// The null service: answers of the vault's shape, computed from nothing.
struct Null {
    value: Arc<Vec<u8>>,
}

type Reply<T> = Result<Response<T>, Status>;

fn not_here(method: &str) -> Status {
    Status::unimplemented(format!(
        "vault-bench-null serves only Put and Get (a baseline, not a vault); {method} is not served"
    ))
}

#[tonic::async_trait]
impl Secrets for Null {
    async fn put(&self, r: Request<PutRequest>) -> Reply<PutResponse> {
        let request = r.into_inner();
        if request.data.is_empty() {
            return Err(Status::invalid_argument("data: no fields"));
        }
        Ok(Response::new(PutResponse {
            version: 1,
            created_time: String::new(),
            revision: 1,
        }))
    }

    async fn get(&self, r: Request<GetRequest>) -> Reply<GetResponse> {
        let request = r.into_inner();
        let mut data = HashMap::with_capacity(1);
        data.insert("value".to_owned(), self.value.as_ref().clone());
        Ok(Response::new(GetResponse {
            path: request.path,
            version: 1,
            data,
            created_time: String::new(),
            key_version: 1,
        }))
    }

    async fn list(&self, _: Request<ListRequest>) -> Reply<ListResponse> {
        Err(not_here("List"))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        Err(not_here("Delete"))
    }

    async fn undelete(&self, _: Request<UndeleteRequest>) -> Reply<UndeleteResponse> {
        Err(not_here("Undelete"))
    }

    async fn destroy(&self, _: Request<DestroyRequest>) -> Reply<DestroyResponse> {
        Err(not_here("Destroy"))
    }

    async fn delete_metadata(
        &self,
        _: Request<DeleteMetadataRequest>,
    ) -> Reply<DeleteMetadataResponse> {
        Err(not_here("DeleteMetadata"))
    }

    async fn patch(&self, _: Request<PatchRequest>) -> Reply<PatchResponse> {
        Err(not_here("Patch"))
    }

    async fn read_metadata(&self, _: Request<ReadMetadataRequest>) -> Reply<ReadMetadataResponse> {
        Err(not_here("ReadMetadata"))
    }

    async fn update_metadata(
        &self,
        _: Request<UpdateMetadataRequest>,
    ) -> Reply<ReadMetadataResponse> {
        Err(not_here("UpdateMetadata"))
    }
}

/// Serves the null baseline on `args.listen` until the process is stopped; prints `vault-bench-null
/// listening on ADDR` first, as the vault prints its own line.
pub async fn run(args: Args, value_size: usize) -> Result<(), String> {
    // It answers anyone and keeps nothing: loopback only, and no flag it would ignore.
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: vault-bench-null listens on loopback addresses only",
            args.listen
        ));
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        return Err("--tls-cert/--tls-key: vault-bench-null serves plaintext only".into());
    }
    if args.dev || args.http_listen.is_some() {
        return Err(
            "--dev/--http-listen: vault-bench-null is not a vault; it takes the transport flags only"
                .into(),
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    println!("vault-bench-null listening on {local}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let service = SecretsServer::new(Null {
        value: Arc::new(vec![b'x'; value_size]),
    })
    .max_decoding_message_size(args.max_request_bytes);
    let accepted = transport::incoming(
        listener,
        crate::connection_limits(&args),
        transport::ConnectionPlaces::default(),
    );
    crate::grpc_builder(&args)
        .add_service(service)
        .serve_with_incoming(accepted)
        .await
        .map_err(|e| format!("server failed: {e}"))
}
