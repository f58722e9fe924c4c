#include "cache/prefetch.h"

#include "cache/evictor.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

namespace netbootfs::cache {

Result<uint64_t> parse_rate(const std::string& text) {
  // A rate is a size per second: the same suffixes as max_cache_size.
  auto r = parse_size(text);
  if (!r) {
    return Error{EINVAL, "bad rate '" + text + "' (bytes per second, or with K, M, G: e.g. 20M)"};
  }
  return r;
}

namespace {

struct Item {
  std::string path;
  bool descend;  // a directory here is walked (named explicitly, or recursive)
};

template <typename T>
T wait(std::future<T>& f) {
  return f.get();  // every Fetcher callback is called exactly once (shutdown included)
}

Result<Attr> lookup(Fetcher& f, const std::string& path) {
  auto p = std::make_shared<std::promise<Result<Attr>>>();
  auto fut = p->get_future();
  f.lookup(path, [p](Result<Attr> r) { p->set_value(std::move(r)); });
  return wait(fut);
}

Result<std::vector<DirEntry>> list(Fetcher& f, const std::string& path) {
  auto p = std::make_shared<std::promise<Result<std::vector<DirEntry>>>>();
  auto fut = p->get_future();
  f.list_dir(path, [p](Result<std::vector<DirEntry>> r) { p->set_value(std::move(r)); });
  return wait(fut);
}

// Opens and reads to the end. ESTALE (changed meanwhile) looks it up again once.
Result<uint64_t> fetch_file(Fetcher& f, const std::string& path, Attr attr, uint64_t rate) {
  for (int attempt = 0;; ++attempt) {
    auto p = std::make_shared<std::promise<Result<std::unique_ptr<OpenFile>>>>();
    auto fut = p->get_future();
    f.open(attr.version, rate, [p](Result<std::unique_ptr<OpenFile>> r) {
      p->set_value(std::move(r));
    });
    auto of = wait(fut);
    if (!of && of.error().code == ESTALE && attempt == 0) {
      auto again = lookup(f, path);
      if (!again) return again.error();
      if (again->is_dir) return Error{EISDIR, "became a directory"};
      attr = std::move(again).value();
      continue;
    }
    if (!of) return of.error();
    OpenFile& file = *of.value();
    const uint64_t size = file.size();
    constexpr size_t kChunk = 1 << 20;
    for (uint64_t off = 0; off < size;) {
      auto rp = std::make_shared<std::promise<Result<Slice>>>();
      auto rf = rp->get_future();
      file.read(off, kChunk, [rp](Result<Slice> r) { rp->set_value(std::move(r)); });
      auto s = wait(rf);
      if (!s) return s.error();
      if (s->len == 0) return Error{EIO, "short read"};
      off += s->len;
    }
    return size;
  }
}

}  // namespace

PrefetchSummary prefetch(Fetcher& fetcher, const std::vector<std::string>& paths,
                         const PrefetchOptions& options,
                         const std::function<void(const PrefetchProgress&)>& progress,
                         const std::function<bool()>& cancelled) {
  const auto t0 = std::chrono::steady_clock::now();
  const int jobs = std::max(1, options.jobs);
  const uint64_t rate = options.max_rate ? std::max<uint64_t>(1, options.max_rate / jobs) : 0;
  std::mutex mu;  // guards everything below (leaf lock; no Fetcher call holds it)
  std::condition_variable cv;
  std::deque<Item> queue;
  for (const auto& p : paths) queue.push_back({p, true});
  size_t busy = 0;
  PrefetchSummary sum;
  PrefetchProgress prog;
  auto record = [&](const std::string& path, Result<uint64_t> r) {
    std::lock_guard lk(mu);
    if (r) {
      sum.files++;
      sum.bytes += r.value();
    } else {
      sum.failures++;
      if (sum.failed.size() < 100) sum.failed.emplace_back(path, r.error().message);
    }
    prog.files = sum.files;
    prog.failures = sum.failures;
    prog.bytes = sum.bytes;
    prog.queued = queue.size() + busy - 1;
    prog.path = path;
    if (progress) progress(prog);
  };
  auto worker = [&] {
    std::unique_lock lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return !queue.empty() || busy == 0 || sum.cancelled; });
      if (sum.cancelled || queue.empty()) {
        cv.notify_all();
        return;
      }
      if (cancelled && cancelled()) {
        sum.cancelled = true;
        cv.notify_all();
        return;
      }
      Item item = std::move(queue.front());
      queue.pop_front();
      busy++;
      lk.unlock();
      auto a = lookup(fetcher, item.path);
      if (a && a->is_dir) {
        if (item.descend) {
          auto entries = list(fetcher, item.path);
          if (!entries) {
            record(item.path, entries.error());
          } else {
            std::lock_guard g(mu);
            for (const auto& e : entries.value()) {
              if (e.is_dir && !options.recursive) continue;
              queue.push_back({item.path.empty() ? e.name : item.path + "/" + e.name,
                               options.recursive});
            }
          }
        }
      } else if (a) {
        record(item.path, fetch_file(fetcher, item.path, std::move(a).value(), rate));
      } else {
        record(item.path, a.error());
      }
      lk.lock();
      busy--;
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < jobs; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace netbootfs::cache
