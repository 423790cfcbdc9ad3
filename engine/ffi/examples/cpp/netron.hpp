// netron.hpp: a small RAII C++17 wrapper over netron.h (header-only; link libnetron).
//
// Every handle is owned by one object (move-only) and freed by its destructor; failures throw
// netron::error with the ntr_status and the library's error text.
#pragma once

#include <netron.h>

#include <cstdint>
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
  void shutdown(std::uint64_t drain_ms) { check(ntr_engine_shutdown(e_.release(), drain_ms)); }

 private:
  handle<ntr_engine, ntr_engine_free> e_;
};

}  // namespace netron
