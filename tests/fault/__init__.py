"""The fault-injection harness: real servers, real databases, faults on a schedule."""
