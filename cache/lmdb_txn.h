// LMDB handles that clean up after themselves, and the few helpers the index
// builds on. LMDB stays in the index: only cache/index*.cc include this.
//
// Contract
// - Env, Txn and Cursor own their handle and are move-only. An Env must
//   outlive every transaction begun in it, a Cursor its transaction.
// - A Txn aborts in its destructor unless committed; after commit() the
//   handle is gone whatever the outcome (LMDB frees it).
// - Functions return LMDB's code (0 on success, an errno value or an MDB_*
//   code otherwise); errno_for() and error() turn it into what callers above
//   the index understand. A missing key is MDB_NOTFOUND, not an error.
// - No locking of their own: with MDB_NOTLS any thread may use a
//   transaction, one thread at a time.
#pragma once

#include <lmdb.h>

#include <string>
#include <string_view>
#include <utility>

#include "cache/util/result.h"

namespace netbootfs::cache::lmdb {

// ENOSPC for a full map, ENAMETOOLONG for an oversized key, EAGAIN for full
// reader or transaction tables, EIO for the rest of LMDB's own codes.
int errno_for(int rc);
Error error(int rc, const std::string& what);

// Owns a handle that `Close` frees. Move-only.
template <class T, void (*Close)(T*)>
class Handle {
 public:
  Handle() = default;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : h_(o.release()) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = o.release();
    }
    return *this;
  }
  ~Handle() { reset(); }

  T* get() const { return h_; }
  // For LMDB's out-parameter (it sets it only on success).
  T** out() {
    reset();
    return &h_;
  }
  T* release() { return std::exchange(h_, nullptr); }
  void reset() {
    if (h_) Close(release());
  }

 private:
  T* h_ = nullptr;
};

// Created with mdb_env_create(env.out()).
using Env = Handle<MDB_env, mdb_env_close>;

class Txn {
 public:
  int begin(MDB_env* env, MDB_txn* parent, unsigned flags) {
    return mdb_txn_begin(env, parent, flags, txn_.out());
  }
  int commit() { return mdb_txn_commit(txn_.release()); }
  void abort() { txn_.reset(); }
  MDB_txn* get() const { return txn_.get(); }

 private:
  Handle<MDB_txn, mdb_txn_abort> txn_;  // aborts unless committed
};

class Cursor {
 public:
  int open(MDB_txn* txn, MDB_dbi dbi) { return mdb_cursor_open(txn, dbi, c_.out()); }
  int get(MDB_val* k, MDB_val* v, MDB_cursor_op op) { return mdb_cursor_get(c_.get(), k, v, op); }

 private:
  Handle<MDB_cursor, mdb_cursor_close> c_;
};

// LMDB never writes through a key or value it is given: the cast is safe.
inline MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view view(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

// `value` points into the map: valid until the transaction ends or writes.
int get(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view& value);
int put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value);
// MDB_NOTFOUND when there was no such key.
int del(MDB_txn* txn, MDB_dbi dbi, std::string_view key);
// 0 when there was no such key either.
int del_if_present(MDB_txn* txn, MDB_dbi dbi, std::string_view key);

// Calls fn(key, value) for every record of `dbi` in key order. Returns the
// code of opening the cursor: a walk that meets an error ends as at the last
// record. fn must not write to `dbi` (that would move the cursor).
template <class F>
int for_each(MDB_txn* txn, MDB_dbi dbi, F&& fn) {
  Cursor c;
  if (const int rc = c.open(txn, dbi); rc != 0) return rc;
  MDB_val k, v;
  for (int rc = c.get(&k, &v, MDB_FIRST); rc == 0; rc = c.get(&k, &v, MDB_NEXT)) {
    fn(view(k), view(v));
  }
  return 0;
}

}  // namespace netbootfs::cache::lmdb
