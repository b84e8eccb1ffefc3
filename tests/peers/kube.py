"""kmock Kubernetes emulator fixture (filled in by the operator work)."""
