"""Loss functions and the recipes that combine them (see ``recipes.py``). Device-agnostic, no Ray/MLflow."""
from .center import CenterLoss
from .expat import REDUCTIONS, BatchHardExpATLoss, BiDirectionalExpATLoss, ExpATLoss
from .label_smoothing import CrossEntropyLabelSmooth
from .recipes import COMPONENTS, RECIPES, Criterion, LossParams, Part, Recipe, build_criterion
from .triplet import TripletLoss

__all__ = [
    "BatchHardExpATLoss",
    "BiDirectionalExpATLoss",
    "COMPONENTS",
    "CenterLoss",
    "Criterion",
    "CrossEntropyLabelSmooth",
    "ExpATLoss",
    "LossParams",
    "Part",
    "RECIPES",
    "REDUCTIONS",
    "Recipe",
    "TripletLoss",
    "build_criterion",
]
