//! The replicated application's code: a WebAssembly module run by `wasmi`.
//!
//! The module is the "software" an upgrade replaces (paper section 2). Its
//! interface, all in `i64`:
//! - `version() -> v`: the interface version; both sides of a call must run
//!   the same one, and the host records both on every call;
//! - `pay(txn, balance) -> (amount, args…)`: at the caller, how much leaves
//!   its account in transaction `txn`, and the call's other arguments;
//! - `serve(balance, amount, args…) -> balance`: at the callee;
//! - optionally `migrate(balance) -> balance`: the state transformation, run
//!   once when the upgrade that brings the module commits, before the group
//!   serves any call under it.
//!
//! A module imports nothing, and each call runs in a fresh instance with a
//! fuel and memory budget, so every replica computes the same results and a
//! looping module stops (a trap, the same everywhere).

use anyhow::{anyhow, bail, Result};
use wasmi::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Val, ValType};

/// The module the node ships with (version 1 of the bank).
pub const BANK_V1: &str = include_str!("../modules/bank-v1.wat");

/// Each group's account when the cluster starts.
pub const INITIAL_BALANCE: i64 = 1_000_000;

/// Instructions' fuel one call may burn.
const FUEL: u64 = 1_000_000;

/// Linear memory one instance may hold.
const MEMORY: usize = 1 << 20;

/// Arguments a call may carry besides the amount.
pub const MAX_ARGS: usize = 8;

/// Compiles WebAssembly text (the `wat` crate) into a module's bytes.
///
/// # Errors
/// When the text does not parse.
pub fn compile(text: &str) -> Result<Vec<u8>> {
    wat::parse_str(text).map_err(|e| anyhow!("{e}"))
}

/// Whether `bytes` are a WebAssembly binary (a payload may also be text).
pub fn is_module(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// A validated module, ready to run.
pub struct Program {
    engine: Engine,
    module: Module,
    version: u64,
    /// `pay`'s results after the amount, `serve`'s parameters after the
    /// balance and the amount: the call's extra arguments.
    args: usize,
}

fn i64s(types: &[ValType]) -> bool {
    types.iter().all(|t| *t == ValType::I64)
}

impl Program {
    /// Validates `bytes` as a bank module: no imports, the exports above
    /// with `pay`'s extra results matching `serve`'s extra parameters, and
    /// a version.
    ///
    /// # Errors
    /// Saying what is wrong.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let mut config = Config::default();
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, bytes).map_err(|e| anyhow!("not a valid module: {e}"))?;
        if module.imports().len() > 0 {
            bail!("a module imports nothing");
        }
        let func = |name: &str| {
            module
                .get_export(name)
                .and_then(|e| e.func().cloned())
                .ok_or_else(|| anyhow!("no function `{name}` exported"))
        };
        let version = func("version")?;
        if !version.params().is_empty() || version.results() != [ValType::I64] {
            bail!("`version` takes nothing and returns one i64");
        }
        let pay = func("pay")?;
        let serve = func("serve")?;
        if pay.params() != [ValType::I64, ValType::I64] || pay.results().is_empty() || !i64s(pay.results()) {
            bail!("`pay` takes (txn, balance) and returns (amount, args…), all i64");
        }
        let args = pay.results().len() - 1;
        if args > MAX_ARGS {
            bail!("a call carries at most {MAX_ARGS} arguments besides the amount");
        }
        if serve.params().len() != args + 2 || !i64s(serve.params()) || serve.results() != [ValType::I64] {
            bail!("`serve` takes (balance, amount, args…) as `pay` returns them, and returns the balance");
        }
        if let Some(m) = module.get_export("migrate") {
            let m = m.func().ok_or_else(|| anyhow!("`migrate` is not a function"))?;
            if m.params() != [ValType::I64] || m.results() != [ValType::I64] {
                bail!("`migrate` takes the balance and returns it");
            }
        }
        let mut program = Self { engine, module, version: 0, args };
        program.version = program.run("version", &[])?.first().copied().unwrap_or(0) as u64;
        Ok(program)
    }

    /// The module's interface version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Runs export `name` in a fresh instance within the budgets.
    fn run(&self, name: &str, params: &[i64]) -> Result<Vec<i64>> {
        let limits = StoreLimitsBuilder::new().memory_size(MEMORY).instances(1).build();
        let mut store: Store<StoreLimits> = Store::new(&self.engine, limits);
        store.limiter(|l| l);
        store.set_fuel(FUEL).map_err(|e| anyhow!("{e}"))?;
        let instance = Linker::new(&self.engine)
            .instantiate_and_start(&mut store, &self.module)
            .map_err(|e| anyhow!("instantiating: {e}"))?;
        let func = instance.get_func(&store, name).ok_or_else(|| anyhow!("no `{name}`"))?;
        let inputs: Vec<Val> = params.iter().map(|p| Val::I64(*p)).collect();
        let mut outputs = vec![Val::I64(0); func.ty(&store).results().len()];
        func.call(&mut store, &inputs, &mut outputs).map_err(|e| anyhow!("`{name}` trapped: {e}"))?;
        Ok(outputs.iter().map(|v| if let Val::I64(x) = v { *x } else { 0 }).collect())
    }

    /// The caller's side of transaction `txn`: the amount (never more than
    /// the balance, never negative) and the call's other arguments.
    ///
    /// # Errors
    /// When the module traps or pays what the account does not hold.
    pub fn pay(&self, txn: u64, balance: i64) -> Result<(i64, Vec<i64>)> {
        let out = self.run("pay", &[txn as i64, balance])?;
        let (amount, args) = out.split_first().ok_or_else(|| anyhow!("`pay` returned nothing"))?;
        if *amount < 0 || *amount > balance {
            bail!("`pay` asked for {amount} of {balance}");
        }
        Ok((*amount, args.to_vec()))
    }

    /// The callee's side: its new balance, or why the call fails (a call
    /// whose arguments do not fit this module's `serve` fails here).
    ///
    /// # Errors
    /// When the arguments do not match or the module traps.
    pub fn serve(&self, balance: i64, amount: i64, args: &[i64]) -> Result<i64> {
        if args.len() != self.args {
            bail!("the call has {} arguments, `serve` takes {}", args.len(), self.args);
        }
        let mut params = vec![balance, amount];
        params.extend_from_slice(args);
        self.run("serve", &params)?.first().copied().ok_or_else(|| anyhow!("`serve` returned nothing"))
    }

    /// The state transformation, where the module has one.
    ///
    /// # Errors
    /// When the module traps.
    pub fn migrate(&self, balance: i64) -> Result<i64> {
        if self.module.get_export("migrate").is_none() {
            return Ok(balance);
        }
        self.run("migrate", &[balance])?.first().copied().ok_or_else(|| anyhow!("`migrate` returned nothing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(name: &str) -> Program {
        let text = std::fs::read_to_string(format!("{}/modules/{name}.wat", env!("CARGO_MANIFEST_DIR"))).unwrap();
        Program::new(&compile(&text).unwrap()).unwrap()
    }

    #[test]
    fn the_shipped_bank_pays_within_the_balance_and_serves() {
        let v1 = bank("bank-v1");
        assert_eq!(v1.version(), 1);
        // 1 + txn mod 7, computed here by hand.
        assert_eq!(v1.pay(10, 100).unwrap(), (4, vec![]));
        assert_eq!(v1.pay(10, 3).unwrap(), (0, vec![]));
        assert_eq!(v1.serve(100, 4, &[]).unwrap(), 104);
        assert_eq!(v1.migrate(55).unwrap(), 55);
    }

    #[test]
    fn version_two_changes_the_interface_on_both_sides() {
        let (v1, v2) = (bank("bank-v1"), bank("bank-v2"));
        assert_eq!(v2.version(), 2);
        // 1 + 20 mod 11 = 10, check 10 * 31 + 7.
        assert_eq!(v2.pay(20, 100).unwrap(), (10, vec![317]));
        assert_eq!(v2.serve(5, 10, &[317]).unwrap(), 15);
        // A wrong check traps; a version 1 call does not fit, nor the
        // other way round.
        assert!(v2.serve(5, 10, &[318]).unwrap_err().to_string().contains("trapped"));
        assert!(v2.serve(5, 10, &[]).is_err());
        assert!(v1.serve(5, 10, &[317]).is_err());
    }

    #[test]
    fn a_module_without_the_interface_does_not_validate() {
        let text = std::fs::read_to_string(format!("{}/modules/bank-invalid.wat", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let err = Program::new(&compile(&text).unwrap()).err().unwrap().to_string();
        assert!(err.contains("`serve`"), "{err}");
        assert!(Program::new(b"\0asm\x01\0\0\0garbage").is_err());
        let imports =
            compile(r#"(module (import "env" "f" (func)) (func (export "version") (result i64) i64.const 1))"#);
        assert!(Program::new(&imports.unwrap()).err().unwrap().to_string().contains("imports"));
        // Types that do not line up between `pay` and `serve`.
        let skew = compile(
            r#"(module (func (export "version") (result i64) i64.const 1)
               (func (export "pay") (param i64 i64) (result i64 i64) i64.const 0 i64.const 0)
               (func (export "serve") (param i64 i64) (result i64) i64.const 0))"#,
        );
        assert!(Program::new(&skew.unwrap()).is_err());
    }

    #[test]
    fn a_looping_module_runs_out_of_fuel_and_an_overdraft_is_refused() {
        let looping = compile(
            r#"(module (func (export "version") (result i64) i64.const 9)
               (func (export "pay") (param i64 i64) (result i64) (loop br 0) i64.const 0)
               (func (export "serve") (param i64 i64) (result i64) i64.const 0))"#,
        )
        .unwrap();
        let p = Program::new(&looping).unwrap();
        assert!(p.pay(1, 10).is_err());
        let greedy = compile(
            r#"(module (func (export "version") (result i64) i64.const 9)
               (func (export "pay") (param i64 i64) (result i64) i64.const 11)
               (func (export "serve") (param i64 i64) (result i64) i64.const 0))"#,
        )
        .unwrap();
        assert!(Program::new(&greedy).unwrap().pay(1, 10).is_err());
    }
}
