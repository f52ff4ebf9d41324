"""Loss functions and the recipes that combine them (see ``recipes.py``). Device-agnostic, no Ray/MLflow."""
from .center import CenterLoss
from .expat import REDUCTIONS, BatchHardExpATLoss, BiDirectionalExpATLoss, ExpATLoss
from .label_smoothing import CrossEntropyLabelSmooth
from .recipes import COMPONENTS, RECIPES, TERMS, Criterion, Part, Recipe, build_criterion, recipe_reads, resolve_parts
from .triplet import TripletLoss

__all__ = [
    "BatchHardExpATLoss",
    "BiDirectionalExpATLoss",
    "COMPONENTS",
    "CenterLoss",
    "Criterion",
    "CrossEntropyLabelSmooth",
    "ExpATLoss",
    "Part",
    "RECIPES",
    "REDUCTIONS",
    "Recipe",
    "TERMS",
    "TripletLoss",
    "build_criterion",
    "recipe_reads",
    "resolve_parts",
]
