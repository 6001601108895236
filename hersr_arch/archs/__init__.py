"""Network architectures: the HERSR network (``hersr_arch.py``, self-contained) and MATLAB bicubic."""
