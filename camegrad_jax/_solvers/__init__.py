"""K×K solvers shared by the weightings (one convention: each solve returns (solution, residual))."""
