//! `wasi:keyvalue/store` and `wasi:keyvalue/atomics` (`@0.2.0-draft2`) over the harness's
//! key-value stores, with Spin's semantics (`crates/factor-key-value/src/host.rs` and its
//! SQLite store, `crates/key-value-spin/src/store.rs`).
//!
//! Spin hosts this draft interface beside its own `spin:key-value`, on the same stores: a label
//! opened through either is the same data, with the same grants ([`KeyValue::open`]). The
//! worker uses it for one thing spin-sdk's API lacks, compare-and-swap.
//!
//! **Compare-and-swap, as Spin's SQLite store does it.** `cas.new` reads nothing; `current`
//! reads the value and remembers it; `swap` writes when the key still holds the remembered
//! value (`UPDATE … WHERE value = :old`), and otherwise fails with a fresh handle whose value
//! has been re-read. When the remembered value is *absent* (or `current` was never called),
//! Spin's swap writes unconditionally (an upsert): two writers that both found a key absent
//! both succeed. The harness does the same, so a guest that survives it here survives it in
//! Spin. `increment` keeps an i64 as 8 little-endian bytes, absent = 0.
//!
//! **Where it differs.** `increment` on a value that is not 8 bytes long is an `other` error
//! here; Spin's SQLite store panics. Spin's Redis store (`crates/key-value-redis`) is not
//! modelled: it WATCHes the key on a connection of its own per handle and reports success even
//! when Redis aborted the transaction; `tests/tests/velocity.rs` runs it under `spin up`.
//! `list-keys` returns every key in one page (as Spin's SQLite store does, ignoring the cursor).

use wasmtime::component::{HasData, Linker, Resource};

use crate::key_value::{KeyValueView, OpenStore};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/wasi-keyvalue.wit",
        world: "harness-wasi-key-value",
        // Host calls trap (rather than return a guest error) on an invalid resource handle.
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::key_value::OpenStore,
            "wasi:keyvalue/atomics.cas": super::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, store};
use store::{Error, KeyResponse};

/// A compare-and-swap in progress: its store, key and the value `current` read.
pub struct Cas {
    store: OpenStore,
    key: String,
    read: Option<Vec<u8>>,
}

/// `HasData` marker for the `wasi:keyvalue` host functions.
pub struct WasiKeyValue;

impl HasData for WasiKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// Spin maps its store errors one to one; the harness's `store-table-full` has no draft
/// counterpart and becomes `other`, as in Spin (`to_wasi_err`).
fn to_wasi(e: crate::key_value::Error) -> Error {
    use crate::key_value::Error as E;
    match e {
        E::NoSuchStore => Error::NoSuchStore,
        E::AccessDenied => Error::AccessDenied,
        E::StoreTableFull => Error::Other("store table full".into()),
        E::Other(m) => Error::Other(m),
    }
}

impl store::Host for KeyValueView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, Error>> {
        match self.key_value.open(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(store)?)),
            Err(e) => Ok(Err(to_wasi(e))),
        }
    }
}

impl KeyValueView<'_> {
    fn bucket(&self, b: &Resource<OpenStore>) -> wasmtime::Result<OpenStore> {
        Ok(self.table.get(b)?.clone())
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(self.bucket(&b)?.get(key).await.map_err(to_wasi))
    }

    async fn set(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.bucket(&b)?.set(key, value).await.map_err(to_wasi))
    }

    async fn delete(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(self.bucket(&b)?.delete(key).await.map_err(to_wasi))
    }

    async fn exists(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self.bucket(&b)?.exists(key).await.map_err(to_wasi))
    }

    async fn list_keys(
        &mut self,
        b: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        Ok(self
            .bucket(&b)?
            .keys()
            .await
            .map(|keys| KeyResponse { keys, cursor: None })
            .map_err(to_wasi))
    }

    async fn drop(&mut self, b: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::HostCas for KeyValueView<'_> {
    async fn new(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, Error>> {
        let store = self.bucket(&b)?;
        Ok(Ok(self.table.push(Cas {
            store,
            key,
            read: None,
        })?))
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (store, key) = {
            let c = self.table.get(&cas)?;
            (c.store.clone(), c.key.clone())
        };
        let value = match store.get(key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(to_wasi(e))),
        };
        self.table.get_mut(&cas)?.read.clone_from(&value);
        Ok(Ok(value))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(
        &mut self,
        b: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        Ok(self
            .bucket(&b)?
            .increment(key, delta)
            .await
            .map_err(to_wasi))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { store, key, read } = self.table.delete(cas)?;
        match store.swap(key.clone(), read, value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // As Spin: a fresh handle on the same key, its value already re-read.
                let read = match store.get(key.clone()).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(to_wasi(e)))),
                };
                let next = self.table.push(Cas { store, key, read })?;
                Ok(Err(atomics::CasError::CasFailed(next)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(to_wasi(e)))),
        }
    }
}

/// Links `wasi:keyvalue/store` and `wasi:keyvalue/atomics`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, WasiKeyValue>(linker, get)?;
    atomics::add_to_linker::<T, WasiKeyValue>(linker, get)
}
