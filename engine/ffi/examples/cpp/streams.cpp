// Streams and events in C++17 through netron.hpp, against a server of st@1.0.0 (count: a
// server stream of N chunks; sum: a client stream, replies how many chunks came in order;
// echo: a bidirectional echo), e.g. the Rust one in engine/ffi/tests/examples.rs.
// Usage: streams ENDPOINT
#include "netron.hpp"

#include <cstring>
#include <iostream>

namespace {

// Chunk i: three little-endian uint32s, i, i * 2654435761 and ~i (the tests' pattern).
std::string chunk(std::uint32_t i) {
  std::uint32_t v[3] = {i, i * 2654435761u, ~i};
  return std::string(reinterpret_cast<const char*>(v), sizeof v);
}

std::uint32_t u32(std::string_view s, std::size_t at) {
  std::uint32_t v = 0;
  std::memcpy(&v, s.data() + at, sizeof v);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: streams ENDPOINT\n";
    return 2;
  }
  constexpr std::uint32_t n = 1000;
  try {
    netron::engine engine({});
    {
      netron::channel ch = engine.connect(argv[1]);

      // Server streaming: one request (how many), then chunks until the end.
      netron::stream count = ch.open_server_stream(
          "st@1.0.0", "count", std::string_view(reinterpret_cast<const char*>(&n), sizeof n), 10000);
      std::uint32_t got = 0;
      while (auto m = count.recv()) got += (*m == chunk(got));
      std::cout << "server stream: " << got << " chunks in order, ended " << count.ended() << "\n";

      // Client streaming: n chunks, finish, then the server's one reply.
      netron::stream sum = ch.open_client_stream("st@1.0.0", "sum", 10000);
      for (std::uint32_t i = 0; i < n; i++) sum.send(chunk(i));
      sum.finish();
      auto reply = sum.recv();
      std::cout << "client stream: server counted " << u32(reply.value(), 0) << " in order "
                << u32(reply.value(), 4) << "\n";

      // Bidirectional: send as much as the credit allows, read back, until the end.
      netron::stream echo = ch.open_bidi("st@1.0.0", "echo", 10000);
      std::uint32_t sent = 0, received = 0, in_order = 0;
      bool finished = false;
      while (!echo.ended()) {
        while (sent < n && echo.send(chunk(sent), 0)) sent++;
        if (sent == n && !finished) {
          echo.finish();  // the server's echo loop ends after the last message
          finished = true;
        }
        if (auto m = echo.recv(1000)) in_order += (*m == chunk(received++));
      }
      std::cout << "bidi: " << in_order << " of " << received << " echoed in order\n";

      // Events: subscribe at the peer, publish to it, get them back in order.
      netron::subscription sub = ch.subscribe("cpp.>");
      for (std::uint32_t i = 0; i < 10; i++) ch.publish("cpp.demo", chunk(i));
      std::uint32_t events = 0;
      while (events < 10) {
        auto e = sub.next(5000);
        if (!e || e->subject != "cpp.demo" || e->data != chunk(events)) return 1;
        events++;
      }
      std::cout << "events: " << events << " in order\n";

      // A failure is an exception carrying its status.
      try {
        ch.open_bidi("st@1.0.0", "deny").recv();
      } catch (const netron::error& e) {
        std::cout << "error: " << ntr_status_str(e.status()) << "\n";
      }
    }  // streams, subscription and channel freed here
    engine.shutdown(1000);
    std::cout << "done\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
