"""The resource guard: machine readings (sensors) and the pause policy that reads them."""
