"""pointkd's C++ CPU kernels: the source (`native.cpp`) and its loader (`native`), built once
per machine and checked against the PyTorch ops they replace."""
