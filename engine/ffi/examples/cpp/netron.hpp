// netron.hpp: a small RAII C++17 wrapper over netron.h (header-only; link libnetron).
//
// Every handle is owned by one object (move-only) and freed by its destructor; failures throw
// netron::error with the ntr_status and the library's error text.
#pragma once

#include <netron.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace netron {

// A failed ntr_ call.
class error : public std::runtime_error {
 public:
  error(ntr_status status, const std::string& what)
      : std::runtime_error(std::string(ntr_status_str(status)) + ": " + what), status_(status) {}
  ntr_status status() const noexcept { return status_; }

 private:
  ntr_status status_;
};

inline void check(ntr_status s) {
  if (s != NTR_OK) throw error(s, ntr_last_error());
}

// A reply buffer owned by the library, reused call after call.
class buffer {
 public:
  buffer() = default;
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  buffer(buffer&& o) noexcept : buf_(std::exchange(o.buf_, ntr_buf{})) {}
  buffer& operator=(buffer&& o) noexcept {
    if (this != &o) {
      ntr_buf_free(&buf_);
      buf_ = std::exchange(o.buf_, ntr_buf{});
    }
    return *this;
  }
  ~buffer() { ntr_buf_free(&buf_); }
  std::string_view view() const {
    return {reinterpret_cast<const char*>(buf_.data), buf_.len};
  }
  ntr_buf* get() noexcept { return &buf_; }

 private:
  ntr_buf buf_{};
};

// Owns a handle type H and frees it with F.
template <typename H, ntr_status (*F)(H)>
class handle {
 public:
  handle() = default;
  explicit handle(H h) : h_(h) {}
  handle(handle&& o) noexcept : h_(std::exchange(o.h_, H{})) {}
  handle& operator=(handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, H{});
    }
    return *this;
  }
  handle(const handle&) = delete;
  handle& operator=(const handle&) = delete;
  ~handle() { reset(); }
  H get() const noexcept { return h_; }
  // Gives up ownership (for calls that consume the handle).
  H release() noexcept { return std::exchange(h_, H{}); }
  void reset() noexcept {
    if (h_.id != 0) F(std::exchange(h_, H{}));
  }

 private:
  H h_{};
};

class method {
 public:
  explicit method(ntr_method m) : m_(m) {}
  // A blocking call; deadline in milliseconds (0: none). The reply is copied out.
  std::string call(std::string_view request, std::uint64_t deadline_ms = 5000) {
    check(ntr_method_call(m_.get(), reinterpret_cast<const std::uint8_t*>(request.data()),
                          request.size(), deadline_ms, reply_.get()));
    return std::string(reply_.view());
  }

 private:
  handle<ntr_method, ntr_method_free> m_;
  buffer reply_;
};

// A stream opened on a channel (bidirectional, client- or server-streaming). Move-only; the
// destructor frees it, which cancels it if it is still open.
class stream {
 public:
  explicit stream(ntr_stream s) : s_(s) {}
  // Sends one message (copied), waiting up to timeout_ms milliseconds for credit
  // (NTR_FOREVER: no limit but the stream's deadline). false: the timeout passed with no credit.
  // Throws netron::error when the stream ended or failed, or the message is too large.
  bool send(std::string_view message, std::uint64_t timeout_ms = NTR_FOREVER) {
    ntr_status st = ntr_stream_send(s_.get(), reinterpret_cast<const std::uint8_t*>(message.data()),
                                    message.size(), timeout_ms);
    if (st == NTR_WOULD_BLOCK) return false;
    check(st);
    return true;
  }
  // The next message, waiting up to timeout_ms milliseconds: a view valid until the next recv()
  // or the stream's destruction. std::nullopt: the peer ended its half (ended() is then true),
  // or nothing arrived in time (ended() false). Throws netron::error when the stream failed.
  std::optional<std::string_view> recv(std::uint64_t timeout_ms = NTR_FOREVER) {
    ntr_chunk c{};
    ntr_status st = ntr_stream_recv(s_.get(), timeout_ms, &c);
    if (st == NTR_WOULD_BLOCK) return std::nullopt;
    if (st == NTR_END_OF_STREAM) {
      ended_ = true;
      return std::nullopt;
    }
    check(st);
    return std::string_view(reinterpret_cast<const char*>(c.data), c.len);
  }
  // True once recv() saw the end of the peer's half.
  bool ended() const noexcept { return ended_; }
  // Ends this side's half OK (the peer's receive sees the end).
  void finish() { check(ntr_stream_finish(s_.get())); }
  // Cancels the whole stream (both halves).
  void cancel() { check(ntr_stream_cancel(s_.get())); }

 private:
  handle<ntr_stream, ntr_stream_free> s_;
  bool ended_ = false;
};

// One event, as subscription::next gives it: the views are valid until the next next() or the
// subscription's destruction.
struct event {
  std::string_view subject;
  std::string_view data;
  // Events of this subscription lost just before this one (a full queue, drop-oldest).
  std::uint32_t lost;
};

// Subscription options (ntr_subscribe_options).
struct subscribe_options {
  // Queue group: of a group's subscriptions, one gets each event. Empty: none.
  std::string group;
  // Events held for the subscription while it is not read (0: the publisher's default).
  std::uint32_t queue_depth = 0;
  // NTR_SLOW_DEFAULT, NTR_SLOW_DROP_OLDEST or NTR_SLOW_DISCONNECT.
  std::uint32_t on_full = NTR_SLOW_DEFAULT;
};

// A subscription; the destructor unsubscribes. Move-only.
class subscription {
 public:
  explicit subscription(ntr_subscription s) : s_(s) {}
  // The next event, waiting up to timeout_ms milliseconds (0: do not wait). std::nullopt:
  // nothing arrived in time, or the subscription ended without error (ended() is then true).
  // Throws netron::error when it ended with an error (too slow, connection closed...).
  std::optional<event> next(std::uint64_t timeout_ms = NTR_FOREVER) {
    ntr_event e{};
    ntr_status st = ntr_subscription_next(s_.get(), timeout_ms, &e);
    if (st == NTR_WOULD_BLOCK) return std::nullopt;
    if (st == NTR_END_OF_STREAM) {
      ended_ = true;
      return std::nullopt;
    }
    check(st);
    return event{std::string_view(e.subject, e.subject_len),
                 std::string_view(reinterpret_cast<const char*>(e.data), e.len), e.lost};
  }
  bool ended() const noexcept { return ended_; }

 private:
  handle<ntr_subscription, ntr_subscription_free> s_;
  bool ended_ = false;
};

namespace detail {
inline const std::uint8_t* bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}
inline ntr_subscribe_options c_options(const subscribe_options& o) {
  return ntr_subscribe_options{o.group.empty() ? nullptr : o.group.c_str(), o.queue_depth,
                               o.on_full};
}
}  // namespace detail

class channel {
 public:
  explicit channel(ntr_channel c) : c_(c) {}
  std::string call(const char* service, const char* method_name, std::string_view request,
                   std::uint64_t deadline_ms = 5000) {
    buffer reply;
    check(ntr_channel_call(c_.get(), service, method_name,
                           reinterpret_cast<const std::uint8_t*>(request.data()), request.size(),
                           deadline_ms, reply.get()));
    return std::string(reply.view());
  }
  netron::method bind(const char* service, const char* method_name) {
    ntr_method m{};
    check(ntr_channel_method(c_.get(), service, method_name, &m));
    return netron::method(m);
  }
  // Opens a bidirectional stream; deadline_ms bounds the whole stream (0: none).
  stream open_bidi(const char* service, const char* method_name, std::uint64_t deadline_ms = 0) {
    ntr_stream s{};
    check(ntr_channel_open_bidi(c_.get(), service, method_name, deadline_ms, &s));
    return stream(s);
  }
  // Opens a client-streaming call: send, finish, then recv() its one reply.
  stream open_client_stream(const char* service, const char* method_name,
                            std::uint64_t deadline_ms = 0) {
    ntr_stream s{};
    check(ntr_channel_open_client_stream(c_.get(), service, method_name, deadline_ms, &s));
    return stream(s);
  }
  // Opens a server-streaming call with its one request: recv() until the end.
  stream open_server_stream(const char* service, const char* method_name,
                            std::string_view request, std::uint64_t deadline_ms = 0) {
    ntr_stream s{};
    check(ntr_channel_open_server_stream(c_.get(), service, method_name, detail::bytes(request),
                                         request.size(), deadline_ms, &s));
    return stream(s);
  }
  // Publishes an event to the peer (its subscribers, and this side's subscriptions there).
  void publish(const char* subject, std::string_view data) {
    check(ntr_channel_publish(c_.get(), subject, detail::bytes(data), data.size()));
  }
  // Subscribes to the peer's events matching pattern (`orders.*`, `orders.>`).
  subscription subscribe(const char* pattern, const subscribe_options& o = {}) {
    ntr_subscription s{};
    ntr_subscribe_options c = detail::c_options(o);
    check(ntr_channel_subscribe(c_.get(), pattern, &c, &s));
    return subscription(s);
  }

 private:
  handle<ntr_channel, ntr_channel_free> c_;
};

// An engine: build it with options, then connect channels. The destructor stops it at once;
// shutdown() drains first.
class engine {
 public:
  struct options {
    std::uint32_t cores = 1;
    std::vector<std::string> listen;
  };
  explicit engine(const options& o) {
    ntr_engine_builder b{};
    check(ntr_engine_builder_new(&b));
    handle<ntr_engine_builder, ntr_engine_builder_free> owned(b);
    check(ntr_engine_builder_cores(b, o.cores));
    for (const auto& ep : o.listen) check(ntr_engine_builder_listen(b, ep.c_str()));
    ntr_engine e{};
    check(ntr_engine_build(owned.release(), &e));  // consumes the builder
    e_ = handle<ntr_engine, ntr_engine_free>(e);
  }
  channel connect(const char* endpoint) {
    ntr_channel c{};
    check(ntr_engine_connect(e_.get(), endpoint, &c));
    return channel(c);
  }
  // Publishes an event to this engine's subscribers (local and remote).
  void publish(const char* subject, std::string_view data) {
    check(ntr_engine_publish(e_.get(), subject, detail::bytes(data), data.size()));
  }
  // Subscribes in process to this engine's events matching pattern.
  subscription subscribe(const char* pattern, const subscribe_options& o = {}) {
    ntr_subscription s{};
    ntr_subscribe_options c = detail::c_options(o);
    check(ntr_engine_subscribe(e_.get(), pattern, &c, &s));
    return subscription(s);
  }
  void shutdown(std::uint64_t drain_ms) { check(ntr_engine_shutdown(e_.release(), drain_ms)); }

 private:
  handle<ntr_engine, ntr_engine_free> e_;
};

}  // namespace netron
