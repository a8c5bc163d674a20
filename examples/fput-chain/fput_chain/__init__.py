"""particle-sim kind ``chain``: the Fermi-Pasta-Ulam-Tsingou chain on a ring.

``fput_chain.kind`` declares the kind (pure Python, what simctl validates task files with);
``fput_chain.run`` runs it; ``fput_chain.reference`` holds the equations in plain numpy and
``fput_chain._chain`` the compiled integrator. See ``README.md``.
"""
