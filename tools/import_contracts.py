"""A custom import-linter contract: a package's private modules are its own.

``private_modules``: for every package listed in ``packages``, no module outside it imports one of
its private modules (a module path with a component that starts with ``_``, below the package)
directly. Layers then meet only through each package's public ``__init__``.
"""

from __future__ import annotations

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class PrivateModulesContract(Contract):
    type_name = "private_modules"

    packages = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        broken = []
        for package in self.packages:  # type: ignore[attr-defined]
            prefix = package + "."
            for module in sorted(graph.find_descendants(package)):
                below = module[len(prefix) :].split(".")
                if not any(part.startswith("_") for part in below):
                    continue
                for importer in sorted(graph.find_modules_that_directly_import(module)):
                    if importer != package and not importer.startswith(prefix):
                        broken.append((importer, module))
        return ContractCheck(kept=not broken, warnings=[], metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for importer, module in check.metadata["broken"]:
            output.print_error(f"{importer} imports the private module {module}")
            output.new_line()
