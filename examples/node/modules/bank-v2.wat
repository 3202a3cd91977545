;; The bank, version 2: an upgrade that changes the interface on both sides.
;;
;; A transfer now carries a second argument, a check value the caller
;; computes from the amount and the callee verifies: a version 1 caller
;; sends no check (its calls do not even type-check against this `serve`),
;; and a version 2 caller's call has an argument version 1's `serve` does
;; not take. Installed atomically, no call ever runs between the two.
(module
  (func (export "version") (result i64)
    i64.const 2)

  ;; pay(txn, balance) -> (amount, check): 1 to 11 now.
  (func (export "pay") (param $txn i64) (param $balance i64) (result i64 i64)
    (local $amount i64)
    (local.set $amount
      (i64.add (i64.rem_u (local.get $txn) (i64.const 11)) (i64.const 1)))
    (if (i64.lt_s (local.get $balance) (local.get $amount))
      (then (local.set $amount (i64.const 0))))
    (local.get $amount)
    (i64.add (i64.mul (local.get $amount) (i64.const 31)) (i64.const 7)))

  ;; serve(balance, amount, check) -> the callee's new balance; a wrong
  ;; check traps (the call fails and the caller gets its money back).
  (func (export "serve") (param $balance i64) (param $amount i64) (param $check i64) (result i64)
    (if (i64.ne (local.get $check)
                (i64.add (i64.mul (local.get $amount) (i64.const 31)) (i64.const 7)))
      (then unreachable))
    (i64.add (local.get $balance) (local.get $amount)))

  ;; The state transformation, run once when the upgrade commits, before
  ;; the group serves a call under this version: the balance carries over.
  (func (export "migrate") (param $balance i64) (result i64)
    (local.get $balance)))
