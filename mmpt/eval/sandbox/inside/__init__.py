"""What runs inside the sandbox (standard library only): bound into it as /mmpt/*.py and imported there as top-level modules."""
