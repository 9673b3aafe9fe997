"""Adapter methods that PEFT does not ship, laid out like PEFT's tuners/<method>/{config,layer,model}.py."""
