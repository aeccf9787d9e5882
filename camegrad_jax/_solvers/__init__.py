"""K×K solvers shared by the weightings; each solve returns (solution, residual)."""
