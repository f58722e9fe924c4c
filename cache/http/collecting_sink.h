// http::CollectingSink: the Sink behind Client::fetch(). It keeps the whole
// response (the in-memory body, or the streamed bytes collected) and hands
// it over through a future once on_done ran.
//
// Contract: a Sink as client.h says, for one request; its callbacks run on
// the client's worker thread, while another thread waits on future(). The
// promise is the only state they share, and it synchronises itself.
#pragma once

#include <future>
#include <string>
#include <utility>

#include "cache/http/client.h"

namespace netbootfs::http {

class CollectingSink : public Sink {
 public:
  bool on_head(const Head&) override { return true; }
  bool on_data(const char* data, size_t len) override {
    streamed_.append(data, len);
    return true;
  }
  void on_done(Outcome outcome, const Head& head, std::string body, std::string detail) override {
    Client::Response response;
    response.outcome = outcome;
    response.head = head;
    response.body = body.empty() ? std::move(streamed_) : std::move(body);
    response.detail = std::move(detail);
    promise_.set_value(std::move(response));
  }
  std::future<Client::Response> future() { return promise_.get_future(); }

 private:
  std::string streamed_;
  std::promise<Client::Response> promise_;
};

}  // namespace netbootfs::http
