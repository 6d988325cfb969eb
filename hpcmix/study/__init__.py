"""The study model: every setting resolved once, on the client, into one frozen :class:`Study`."""

from .model import (ESTIMATORS, SMEARED, SPLITS, AUCStudy, GenerateSettings, ParameterOfInterest, SmearingSettings,
                    Study, TemplateSettings, ToySettings)
from .resolve import COMMAND_LINE, load_study, merge, parse_sets, read_job_file, resolve_study

__all__ = ["AUCStudy", "COMMAND_LINE", "ESTIMATORS", "GenerateSettings", "ParameterOfInterest", "SMEARED", "SPLITS",
           "SmearingSettings", "Study", "TemplateSettings", "ToySettings", "load_study", "merge", "parse_sets",
           "read_job_file", "resolve_study"]
