// A tiny PyTorch custom op for the tests: sts_test::add_one(x) = x + 1.
#include <torch/library.h>
#include <ATen/ATen.h>

at::Tensor add_one(const at::Tensor& x) { return x + 1; }

TORCH_LIBRARY(sts_test, m) { m.def("add_one(Tensor x) -> Tensor"); }
TORCH_LIBRARY_IMPL(sts_test, CPU, m) { m.impl("add_one", add_one); }
