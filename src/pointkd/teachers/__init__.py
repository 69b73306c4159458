"""Teachers from anywhere, behind one interface (`Teacher`): pointkd checkpoints, ONNX files,
and `module:factory` PyTorch entry points (`load`), and running them over augmented rows,
with voting (`inference`)."""
