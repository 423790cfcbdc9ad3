// A Netron client in C++17 through netron.hpp: calls calc@1.0.0 (examples/c/server.c).
// Usage: client ENDPOINT
#include "netron.hpp"

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: client ENDPOINT\n";
    return 2;
  }
  try {
    netron::engine engine({});
    {
      netron::channel ch = engine.connect(argv[1]);
      std::string sum = ch.call("calc@1.0.0", "add", std::string("\x05\x07", 2));
      std::cout << "add: " << unsigned(static_cast<unsigned char>(sum.at(0))) << "\n";
      std::vector<netron::method> bound;  // wrapper objects are move-only: containers hold them
      bound.push_back(ch.bind("calc@1.0.0", "echo"));
      std::cout << "echo: " << bound[0].call("from C++") << "\n";
      try {
        ch.call("calc@1.0.0", "nope", "");
      } catch (const netron::error& e) {
        std::cout << "error: " << ntr_status_str(e.status()) << "\n";
      }
    }  // channel and method freed here
    engine.shutdown(1000);
    std::cout << "done\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
