"""Radiometric thermal cameras and the face temperature measurement."""
