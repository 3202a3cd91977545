;; The bank, version 1: the node's replicated application as it ships.
;;
;; Each group keeps one account. Every transaction of a group pays one of
;; its neighbors: `pay` says how much leaves the caller's account (and the
;; call's arguments), `serve` runs at the callee and returns its new
;; balance. The host keeps the balance, moves the money and records the
;; versions of both sides of every call.
(module
  ;; The interface version: both sides of a call must run the same one.
  (func (export "version") (result i64)
    i64.const 1)

  ;; pay(txn, balance) -> amount: 1 to 7, nothing when the account is short.
  (func (export "pay") (param $txn i64) (param $balance i64) (result i64)
    (local $amount i64)
    (local.set $amount
      (i64.add (i64.rem_u (local.get $txn) (i64.const 7)) (i64.const 1)))
    (if (result i64) (i64.lt_s (local.get $balance) (local.get $amount))
      (then (i64.const 0))
      (else (local.get $amount))))

  ;; serve(balance, amount) -> the callee's new balance.
  (func (export "serve") (param $balance i64) (param $amount i64) (result i64)
    (i64.add (local.get $balance) (local.get $amount))))
