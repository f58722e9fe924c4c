#include "cache/lmdb_txn.h"

namespace netbootfs::cache::lmdb {

// LMDB returns either an errno value (positive) or one of its own codes
// (negative); callers above the index only understand errno.
int errno_for(int rc) {
  if (rc > 0) return rc;
  switch (rc) {
    case MDB_MAP_FULL:
      return ENOSPC;
    case MDB_BAD_VALSIZE:
      return ENAMETOOLONG;
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
      return EAGAIN;
    default:
      return EIO;
  }
}

Error error(int rc, const std::string& what) {
  return Error{errno_for(rc), what + ": " + mdb_strerror(rc)};
}

int get(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view& value) {
  MDB_val k = val(key), v;
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == 0) value = view(v);
  return rc;
}

int put(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view value) {
  MDB_val k = val(key), v = val(value);
  return mdb_put(txn, dbi, &k, &v, 0);
}

int del(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
  MDB_val k = val(key);
  return mdb_del(txn, dbi, &k, nullptr);
}

int del_if_present(MDB_txn* txn, MDB_dbi dbi, std::string_view key) {
  const int rc = del(txn, dbi, key);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

}  // namespace netbootfs::cache::lmdb
